"""One obvious next action, named the same in every panel (issue 17).

The Train and Rounds panels both start rounds; they used to call it "Start round" and "Next
round", the Review panel pointed at a third name, the texts went stale while a round trained
and nothing said "resume" after Stop. Every panel now asks :func:`next_action` for the sentence
to show and :func:`round_button_text` for the label of the round button, so the name of the
action is the same wherever the user looks. No Qt here: it reads the project only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from napari_alunet.store.records import RoundStatus

#: What a round's stored status means to a user. "queued" read as "waiting to run"; the round
#: is in fact waiting for the user's review.
STATUS_TEXT = {
    "started": "stopped while training",
    "trained": "stopped after training",
    "evaluated": "stopped while scoring",
    "queued": "in review",
    "complete": "complete",
    "abandoned": "abandoned",
}

#: What each job does, for "... running" texts.
JOB_TEXT = {"round": "a round is training", "oracle": "committing ground truth",
            "import": "importing images", "sample project": "creating the sample project",
            "score": "scoring the pool", "feature maps": "computing feature maps"}


def status_text(status: str) -> str:
    """The user's words for a round status (unknown statuses as they are)."""
    return STATUS_TEXT.get(status, status)


def _unfinished(current: Any) -> bool:
    return current is not None and current.status.in_progress


def model_warning(current: Any) -> str:
    """A warning (ending in a line break) when the round's model failed its health check: it
    fits its own labels poorly (collapsed, e.g. everything background), so correcting its
    predictions costs as much as drawing; '' otherwise."""
    fit = (current.config or {}).get("fit") or {}
    if fit.get("healthy", True):
        return ""
    dice = fit.get("labelled_dice")
    shown = "" if dice is None else f" (Dice {dice:.2f} on its own labels)"
    return (f"<b>Warning</b>: round {current.idx}'s model looks collapsed{shown}; its "
            "predictions are poor starting points. Label a few more images (the queue, or "
            "'empty' start) before trusting its uncertainty.<br>")


def prediction_warning(prediction: Any, class_names: Any) -> str:
    """A warning when one class takes more than 90 % of a prediction (a near-empty or
    collapsed prediction of this image); '' otherwise. ``prediction``: (h, w) labels."""
    import numpy as np

    from napari_alunet.config import UNKNOWN_LABEL

    values = np.asarray(prediction)
    values = values[values != UNKNOWN_LABEL]
    if values.size == 0:
        return ""
    counts = np.bincount(values.ravel(), minlength=len(class_names))
    top = int(np.argmax(counts))
    share = counts[top] / values.size
    if share <= 0.9:
        return ""
    name = class_names[top] if top < len(class_names) else str(top)
    return (f"<b>Check closely</b>: the model labels {100 * share:.0f} % of this image "
            f"{name}.")


def round_button_text(project: Any) -> str:
    """Label of the button that starts rounds (the same in Train and Rounds): 'Train round
    N', or 'Resume round N' when round N was stopped before its queue was made."""
    if project is None:
        return "Train round 0"
    current = project.current_round()
    if current is None:
        return "Train round 0"
    if _unfinished(current):
        return f"Resume round {current.idx}"
    return f"Train round {current.idx + 1}"


@dataclass(frozen=True)
class NextAction:
    """What to do now: one sentence (rich text) and the tab where it is done (None: wait)."""

    text: str
    tab: str | None


def next_action(project: Any, job_name: str = "") -> NextAction:
    """The one thing the user should do next, given the project and the running job."""
    if project is None:
        return NextAction("Open a project, import a pool folder, or create a sample project.",
                          "Project")
    if job_name:
        doing = JOB_TEXT.get(job_name, f"{job_name} is running")
        stop = (" (Stop keeps what is done; the round resumes later)" if job_name == "round"
                else "")
        return NextAction(f"Wait: {doing}{stop}.", None)
    if project.read_only:
        return NextAction("Read-only: browse the images and the learning curve; close the "
                          "project in the other session to make changes.", None)
    current = project.current_round()
    button = round_button_text(project)
    labelled = project.counts().get("labelled", 0)
    if current is None:
        if labelled == 0:
            return NextAction(f"No labelled images yet: <b>{button}</b> (Train) queues the "
                              "pool's most typical images for you to label first (Acquire: "
                              "cold start).", "Train")
        return NextAction(f"<b>{button}</b> (Train): train on the {labelled} labelled "
                          "image(s) and queue the images the model is least sure about.",
                          "Train")
    if _unfinished(current):
        return NextAction(f"Round {current.idx} was {status_text(current.status)}: "
                          f"<b>{button}</b> (Train) continues it where it stopped.", "Train")
    if current.status == RoundStatus.QUEUED:
        pending = len(project.queue(current.idx))
        warning = model_warning(current)
        if pending:
            return NextAction(f"{warning}Review: {pending} image(s) of round {current.idx} "
                              "wait for your correction.", "Review")
        return NextAction(f"Review of round {current.idx} done: <b>{button}</b> (Train) "
                          "learns from the new labels.", "Train")
    return NextAction(f"<b>{button}</b> (Train): train on the {labelled} labelled image(s).",
                      "Train")

"""Open napari with the Active learning widget docked, on a project or a sample project.

Usage::

    python -m napari_alunet.widgets.launch [PROJECT]
    python -m napari_alunet.widgets.launch --sample FOLDER [--n 40]

``--sample`` opens ``FOLDER/alunet-sample-project`` if it exists, else writes a synthetic pool
into ``FOLDER`` and imports it (in a worker, with progress), so running it twice continues the
same project where it stopped.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from napari_alunet.store import DB_NAME


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_alunet.widgets.launch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", type=Path, help="a project folder to open")
    parser.add_argument("--sample", type=Path, metavar="FOLDER",
                        help="open (or first create) a synthetic sample project in FOLDER")
    parser.add_argument("--n", type=int, default=40, help="images in a new sample (default 40)")
    args = parser.parse_args(argv)

    import napari

    from napari_alunet.widgets.main import ActiveLearningWidget

    viewer = napari.Viewer(title="napari-alunet")
    widget = ActiveLearningWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Active learning", area="right")
    panel = widget.panel("Project")
    if args.project is not None:
        panel.open_project(args.project)
    elif args.sample is not None:
        existing = next((p for p in (args.sample, args.sample / "alunet-sample-project")
                         if (p / DB_NAME).is_file()), None)
        if existing is not None:
            panel.open_project(existing)
        else:
            args.sample.mkdir(parents=True, exist_ok=True)
            panel.create_sample(args.sample, n=args.n)
    napari.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

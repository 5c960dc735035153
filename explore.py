"""Explore directions in the browser: a local page with the image of a seed and one slider a
direction, for one directions file or two side by side (made for the same generator).

    python explore.py directions=outputs/<run>/directions.pt
    python explore.py directions=[outputs/a/directions.pt,outputs/b/directions.pt] port=0
    python explore.py directions=... host=0.0.0.0 port=8080 seed=42

Prints the page's address and serves until Ctrl+C. It needs the files and the generator they
record (rebuilt as edit.py rebuilds it), and the optional ``explore`` extra
(``pip install -e '.[explore]'``: Starlette and uvicorn). It listens on 127.0.0.1 unless
``host=`` says otherwise, and writes nothing. The page and its API: ``explorer/app.py``.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, ListConfig

from common.checks import integer, number
from common.errors import UserError
from common.runs import check_command_line, exit_on_setup_error, register_resolvers
from explorer.render import Explorer

log = logging.getLogger("explore")
register_resolvers()
# Mistakes in the command: one line on the log and exit status 2 (exit_on_setup_error).


def check_numbers(cfg: DictConfig) -> None:
    """Every number of the command, checked before any file is read (a ``UserError``
    naming the option), in the ranges the page itself takes (explorer/app.py)."""
    from explorer.app import MAX_SEED, MAX_THUMBS, STRIP_STEPS
    integer(cfg.port, "port", low=0, high=65535, hint="0 picks a free one")
    integer(cfg.seed, "seed", low=0, high=MAX_SEED)
    integer(cfg.thumbnails, "thumbnails", low=1, high=MAX_THUMBS)
    integer(cfg.strip_steps, "strip_steps", low=STRIP_STEPS[0], high=STRIP_STEPS[1])
    number(cfg.get("default_alpha_range"), "default_alpha_range", low=0, low_open=True,
           none=True)


def explore(cfg: DictConfig) -> None:
    """Check everything, then serve the page until interrupted."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise UserError(f"the explorer needs Starlette and uvicorn ({err}): install them "
                                "with pip install -e '.[explore]'") from None
    value = cfg.directions
    paths = list(value) if isinstance(value, (list, ListConfig)) else [value]
    if len(paths) > 2:
        raise UserError(f"directions= names {len(paths)} files; the page shows one, or two "
                                "side by side")
    check_numbers(cfg)
    explorer = Explorer.open(paths, cfg.generator, cfg.generator_from_run, cfg.default_alpha_range,
                             cfg.get("device"), trusted_modules=cfg.get("trusted_modules"))
    # the web stack after the files: a mistake in them is reported without loading it
    from explorer.app import ExplorerApp, RequestError, make_server

    try:
        app = ExplorerApp(explorer, seed=cfg.seed, thumbnails=cfg.thumbnails,
                          strip_steps=cfg.strip_steps)
    except RequestError as err:
        raise UserError(str(err)) from None
    host = str(cfg.host)
    try:
        server, sock, url = make_server(app, host, cfg.port)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{cfg.port} ({err.strerror or err}): "
                                "pass another port (port=0 picks a free one) or host") from None
    shown = ", ".join(f"{f.name} ({f.directions.meta.get('method')})" for f in explorer.files)
    log.info("exploring %s on generator %r", shown, explorer.generator.name)
    print(f"Explorer running at {url}  (Ctrl+C stops it)", flush=True)
    server.run(sockets=[sock])


@hydra.main(version_base="1.3", config_path="configs", config_name="explore")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_setup_error(explore, cfg, log)


def main() -> None:
    """The command line: a mistake in it is one line before Hydra runs the job."""
    check_command_line("explore", sys.argv[1:], "explore")
    _hydra_main()


if __name__ == "__main__":
    main()

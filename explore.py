"""Explore directions in the browser: a local page with the image of a seed and one slider a
direction, for one directions file or two side by side (made for the same generator).

    python explore.py directions=outputs/<run>/directions.pt
    python explore.py directions=[outputs/a/directions.pt,outputs/b/directions.pt] port=0
    python explore.py directions=... host=0.0.0.0 port=8080 seed=42

Prints the page's address and serves until Ctrl+C. It needs the files and the generator they
record (rebuilt as edit.py rebuilds it), and the optional ``explore`` extra
(``pip install -e '.[explore]'``: Starlette and uvicorn). It listens on 127.0.0.1 unless
``host=`` says otherwise, and writes nothing but the text box's relevance cache (a StyleGAN2 or
StyleGAN3 in any space: a slider for any typed prompt, ``text.*``). The page and its API: ``explorer/app.py``.
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


def setup_text(explorer: Explorer, cfg: DictConfig) -> None:
    """The text box (``text.*``): StyleCLIP's global directions of the files' generator in S,
    the channel relevance read from the cache or computed now (with a progress bar)."""
    text = cfg.text
    if text.enabled not in (True, False, "auto"):
        raise UserError(f"text.enabled={text.enabled!r}: use auto, true or false")
    if text.enabled is False:
        return
    g = explorer.generator
    if not (getattr(g, "style_based", False) and g.has_styles):
        reason = (f"the text box needs a generator with S space (StyleGAN2 or StyleGAN3), and "
                  f"{g.name!r} has none: StyleCLIP's global directions move styles")
        if text.enabled is True:
            raise UserError(f"text.enabled=true: {reason}")
        explorer.text_reason = reason
        return
    number(text.beta, "text.beta", low=0, high=1, high_open=True)
    number(text.alpha_range, "text.alpha_range", low=0, low_open=True)
    number(text.step, "text.step", low=0, low_open=True)
    integer(text.images, "text.images", low=1)
    integer(text.std_samples, "text.std_samples", low=2)
    if not str(text.neutral).strip():
        raise UserError("text.neutral: give the text of the unedited image, such as 'a shape'")
    from tqdm.auto import tqdm

    from clip_models import load_clip
    from clip_models.base import check_words
    from editing.styleclip import GlobalDirections, ProbeSettings, probed_channels

    clip = load_clip(str(cfg.clip.path), cfg.clip.get("arch"))
    check_words(clip, [str(text.neutral)])
    settings = ProbeSettings(int(text.images), float(text.step), int(text.std_samples),
                             bool(text.torgb), int(text.seed))
    with explorer.styles_view() as styled:  # the relevance lives in S, whatever the files' view
        total = 2 * settings.images * len(probed_channels(styled, settings.torgb))
        bar = tqdm(total=total, desc="text box: channel relevance (once per generator and CLIP)",
                   unit="render", disable=None)
        directions = GlobalDirections(styled, clip, settings, text.cache_dir or None,
                                      progress=bar.update)
        bar.close()
    log.info("text box: channel relevance %s (%.0f s to compute)",
             "read from the cache" if directions.from_cache else "computed", directions.seconds)
    explorer.enable_text(directions, str(text.neutral), float(text.beta), float(text.alpha_range))


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
    setup_text(explorer, cfg)
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

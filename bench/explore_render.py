"""Render time of the explorer (explore.py) on the built-in generators: what a slider move
costs on the server, and how long the page takes to start.

For each generator config (``configs/generator/``) a directions file of 8 random directions is
made in a temporary folder (linear, and WarpedGANSpace's RBF warps: a non-linear path walked in
steps of 0.25), and the explorer's API is called as the page calls it, each call with new slider
values (a slider move): ``/api/render`` with 1 and 2 sliders away from 0, the traversal strip
(7 images) and the thumbnails (8 seeds). Two times per request, in ms, median and p90:

* **render**: ``Explorer.render`` + PNG encoding, the server's work for the request;
* **HTTP**: the whole request through Starlette's TestClient (JSON checks, the worker thread).

Then the start-up: ``python explore.py directions=<file> port=0`` launched, until the page,
``/api/info`` and the first image have been served (``--no-startup`` leaves it out).

    .venv/bin/python bench/explore_render.py
    .venv/bin/python bench/explore_render.py --repeats 100 --generators stylegan2_shapes

A benchmark, not a test: nothing under tests/ imports it (no timed assertion anywhere).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project is not installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from common.images import png_bytes  # noqa: E402
from directions import Directions, LinearDirections, RBFWarps  # noqa: E402
from explorer.app import ExplorerApp  # noqa: E402
from explorer.render import Explorer  # noqa: E402

KINDS = {"linear": lambda d: LinearDirections(d, 8, init_seed=0),
         "warped": lambda d: RBFWarps(d, 8, num_dipoles=32, init_seed=0)}


def directions_file(folder: Path, generator, kind: str) -> Path:
    path = folder / kind / "directions.pt"
    directions = Directions(KINDS[kind](generator.latent_dim), {"method": kind, "alpha_range": 6.0},
                            generator=generator)
    return directions.save(path)


def quantiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1e3, ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1e3


def requests(rng: random.Random):
    """(name, route, a body with fresh slider values) for each kind of request."""
    alpha = lambda: round(rng.uniform(-6, 6), 2)  # noqa: E731
    yield "1 slider", "render", {"seed": 7, "edits": [[1, alpha()]]}
    yield "2 sliders", "render", {"seed": 7, "edits": [[1, alpha()], [4, alpha()]]}
    yield "strip (7)", "strip", {"seed": 7, "edits": [[1, alpha()]], "direction": 4}
    yield "thumbnails (8)", "thumbs", {"seed": rng.randrange(1000), "count": 8}


def bench(name: str, kind: str, folder: Path, repeats: int, warmup: int) -> list[list[str]]:
    # config-from-command-line: the project's own shipped generator config, chosen by name
    generator = instantiate(OmegaConf.load(ROOT / "configs" / "generator" / f"{name}.yaml"))
    path = directions_file(folder / name, generator, kind)
    app = ExplorerApp(Explorer.open([path], generator_cfg=None))
    client, explorer = TestClient(app.asgi()), app.explorer
    rng = random.Random(0)
    times: dict[str, tuple[list[float], list[float]]] = {}
    for round_ in range(warmup + repeats):
        for label, route, body in requests(rng):  # every request once a round
            kwargs, nrow, _ = getattr(app, f"_{route}")(dict(body))
            start = time.perf_counter()
            png_bytes(explorer.render(**kwargs), nrow=nrow)
            middle = time.perf_counter()
            response = client.post(f"/api/{route}", json=body)
            end = time.perf_counter()
            assert response.status_code == 200, response.text
            if round_ >= warmup:
                render, http = times.setdefault(label, ([], []))
                render.append(middle - start)
                http.append(end - middle)
    rows = []
    for label, (render, http) in times.items():
        (r50, r90), (h50, h90) = quantiles(render), quantiles(http)
        rows.append([name, f"{generator.space} ({generator.resolution} px)", kind, label,
                     f"{r50:.1f}", f"{r90:.1f}", f"{h50:.1f}", f"{h90:.1f}"])
    return rows


def startup(folder: Path) -> float:
    """Seconds from launching explore.py to the page, /api/info and a first image served."""
    # config-from-command-line: the project's own shipped generator config, chosen by name
    generator = instantiate(OmegaConf.load(ROOT / "configs" / "generator" / "stylegan2_shapes.yaml"))
    path = directions_file(folder / "startup", generator, "linear")
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "explore.py"), f"directions={path}", "port=0"],
                               cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        for line in process.stdout:
            if "http://" in line:
                url = line[line.index("http://"):].split()[0]
                break
        else:
            raise RuntimeError("explore.py ended without printing its address")
        urllib.request.urlopen(url).read()
        urllib.request.urlopen(url + "api/info").read()
        request = urllib.request.Request(url + "api/render", data=b'{"seed": 0}',
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request).read()
        return time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", nargs="+", default=["dcgan_shapes", "stylegan2_shapes"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-startup", action="store_true")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.repeats} requests of each kind (after {args.warmup} untimed)\n")
    header = ["generator", "space", "directions", "request", "render median ms", "render p90 ms",
              "HTTP median ms", "HTTP p90 ms"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * 3 + "---|" + "---:|" * 4)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.generators:
            for kind in args.kinds:
                for row in bench(name, kind, Path(tmp), args.repeats, args.warmup):
                    print("| " + " | ".join(row) + " |", flush=True)
        if not args.no_startup:
            seconds = startup(Path(tmp))
            print(f"\nstart-up (explore.py launched -> page, /api/info and a first image served, "
                  f"stylegan2_shapes): {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

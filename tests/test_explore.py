"""The explorer (explore.py, explorer/): its API on tiny random generators (renders equal to
Directions.apply rendered by the generator, layer ranges, truncation, two files, strips,
thumbnails, refused requests, no paths served), the script's refusals, and the page in a real
headless Chromium."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from common.errors import UserError

pytest.importorskip("starlette", reason="the explorer's extra: pip install -e '.[explore]'")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx: pip install -e '.[test]'")
from starlette.testclient import TestClient  # noqa: E402

from common.images import png_bytes  # noqa: E402
from directions import Directions, LinearDirections, RBFWarps  # noqa: E402
from explorer.app import ExplorerApp, make_server  # noqa: E402
from explorer.render import Explorer  # noqa: E402
from generators import random_generator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
TINY_DCGAN = dict(latent_dim=8, resolution=16, width=4)
TINY_STYLEGAN = dict(resolution=8, style_dim=8, n_mlp=1, channels=[8, 8])


def save(path: Path, directions, generator, method: str, alpha_range: float = 3.0) -> Path:
    Directions(directions, {"method": method, "alpha_range": alpha_range}, generator=generator).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two files for one tiny DCGAN (a labelled linear set, a warp set), a W+ file for a tiny
    StyleGAN2 and a file for another DCGAN."""
    root = tmp_path_factory.mktemp("explore")
    dcgan = random_generator("dcgan", **TINY_DCGAN)
    for run in ("linear", "warped", "wplus", "other"):
        (root / run).mkdir()
    linear = save(root / "linear" / "directions.pt", LinearDirections(8, 3, init_seed=0), dcgan, "voynov")
    (root / "linear" / "evaluation.json").write_text(json.dumps({
        "directions": str(linear), "label": "voynov", "results": {"voynov": {
            "factors": ["x", "hue"], "effect_matrix": [[0.3, 0.1], [0.0, 0.2], [0.1, 0.1]]}}}))
    warped = save(root / "warped" / "directions.pt",
                  RBFWarps(8, 2, num_dipoles=2, init_seed=0), dcgan, "warped", alpha_range=6.0)
    wplus = save(root / "wplus" / "directions.pt", LinearDirections(8, 2, init_seed=1),
                 random_generator("stylegan2", space="w+", **TINY_STYLEGAN), "sefa")
    other = save(root / "other" / "directions.pt", LinearDirections(8, 3, init_seed=0),
                 random_generator("dcgan", init_seed=1, **TINY_DCGAN), "voynov")
    return {"linear": linear, "warped": warped, "wplus": wplus, "other": other}


@pytest.fixture(scope="module")
def pair(files):
    """The app on the DCGAN's two files, side by side."""
    explorer = Explorer.open([files["linear"], files["warped"]], generator_cfg=None)
    return explorer, TestClient(ExplorerApp(explorer).asgi())


@pytest.fixture(scope="module")
def wplus(files):
    explorer = Explorer.open([files["wplus"]], generator_cfg=None)
    return explorer, TestClient(ExplorerApp(explorer).asgi())


def draw(generator, seed: int):
    """A seed's latent, drawn as edit.py draws it."""
    return generator.draw(1, torch.Generator().manual_seed(seed))[0]


def expected(generator, directions: Directions, seed: int, edits) -> bytes:
    with torch.no_grad():
        return png_bytes(generator(directions.apply(draw(generator, seed), edits)), nrow=1)


def post(client, route: str, **body):
    response = client.post(f"/api/{route}", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return response


def size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(png)).size


def test_info_labels_sliders_from_the_evaluation(pair):
    _, client = pair
    info = client.get("/api/info").json()
    first, second = info["files"]
    assert first["labels"] == ["direction 0: x, purity 0.75", "direction 1: hue, purity 1.00",
                               "direction 2: x, purity 0.50"]
    assert second["labels"] == ["direction 0", "direction 1"]  # no evaluation.json beside it
    assert (first["alpha_range"], second["alpha_range"], second["alpha_limit"]) == (3.0, 6.0, 60.0)
    assert first["method"] == "voynov" and not info["generator"]["style_based"]


def test_combined_edits_are_directions_apply_rendered_by_the_generator(pair):
    explorer, client = pair
    g, d = explorer.generator, explorer.files[0].directions
    plain = post(client, "render", seed=5).content
    assert plain == expected(g, d, 5, [])
    one = post(client, "render", seed=5, edits=[[0, 2.0]]).content
    two = post(client, "render", seed=5, edits=[[0, 2.0], [1, -1.5]]).content
    assert two == expected(g, d, 5, [(0, 2.0), (1, -1.5)])
    assert len({plain, one, two}) == 3
    assert post(client, "render", seed=6, edits=[[0, 2.0]]).content != one
    # the second file, on the same seed: its own (non-linear) directions
    warped = post(client, "render", file=1, seed=5, edits=[[1, 4.0]]).content
    assert warped == expected(g, explorer.files[1].directions, 5, [(1, 4.0)]) and warped != plain


def test_strip_and_thumbnails(pair):
    explorer, client = pair
    g, d = explorer.generator, explorer.files[0].directions
    response = post(client, "strip", seed=2, edits=[[0, 1.0], [2, 3.0]], direction=2, steps=5)
    assert response.headers["x-alphas"] == "-3,-1.5,0,1.5,3"
    base = d.apply(draw(g, 2), [(0, 1.0)])  # the strip walks direction 2 from the other edits
    strip = d.render_traversal(g, base, 2, [-3, -1.5, 0, 1.5, 3])
    assert response.content == png_bytes(strip[0], nrow=5) and size(response.content) == (5 * 16, 16)
    response = post(client, "thumbs", seed=10, count=4)
    assert response.headers["x-seeds"] == "8,9,11,12" and size(response.content) == (4 * 16, 16)
    assert post(client, "thumbs", seed=0, count=3).headers["x-seeds"] == "1,2,3"


def test_layer_ranges_and_truncation_of_a_style_based_generator(wplus):
    explorer, client = wplus
    g, d = explorer.generator, explorer.files[0].directions
    assert client.get("/api/info").json()["generator"]["layer_groups"]["all"] == [0, 1, 2, 3]
    every = post(client, "render", seed=1, edits=[[0, 3.0]]).content
    assert every == expected(g, d, 1, [(0, 3.0)])
    assert post(client, "render", seed=1, edits=[[0, 3.0]], layers=[0, 3]).content == every
    coarse = post(client, "render", seed=1, edits=[[0, 3.0]], layers=[0, 1]).content
    w = draw(g, 1)  # N x L x d: a code a layer
    mixed = torch.cat([d.apply(w, [(0, 3.0)])[:, :2], w[:, 2:]], dim=1)  # only layers 0-1 moved
    with torch.no_grad():
        assert coarse == png_bytes(g(mixed), nrow=1)
    assert len({every, coarse, post(client, "render", seed=1).content}) == 3
    # truncation: as if the generator were built with truncation_psi=0.5
    half = random_generator("stylegan2", space="w+", truncation_psi=0.5, **TINY_STYLEGAN)
    truncated = post(client, "render", seed=1, edits=[[0, 3.0]], psi=0.5).content
    assert truncated == expected(half, d, 1, [(0, 3.0)]) and truncated != every
    assert g.truncation_psi == 1.0  # the override lasts one render
    assert post(client, "render", seed=1, edits=[[0, 3.0]]).content == every


def test_layer_ranges_in_s_move_the_styles_of_those_layers(tmp_path):
    """In S a layer range counts style layers (ToRGB included) and keeps the edit on their
    channels only."""
    g = random_generator("stylegan2", space="s", **TINY_STYLEGAN)
    (tmp_path / "s").mkdir()
    path = save(tmp_path / "s" / "directions.pt", LinearDirections(g.latent_dim, 2, init_seed=3), g, "ganspace")
    explorer = Explorer.open([path], generator_cfg=None)
    client = TestClient(ExplorerApp(explorer).asgi())
    g, d = explorer.generator, explorer.files[0].directions
    info = client.get("/api/info").json()["generator"]
    assert info["space"] == "s" and info["num_layers"] == len(g.style_layers()) == 5
    first_two = post(client, "render", seed=1, edits=[[0, 3.0]], layers=[0, 1]).content
    s = draw(g, 1)
    mixed = s.clone()
    channels = g.style_channels([0, 1])
    mixed[:, channels] = d.apply(s, [(0, 3.0)])[:, channels]
    with torch.no_grad():
        assert first_two == png_bytes(g(mixed), nrow=1)
    every = post(client, "render", seed=1, edits=[[0, 3.0]]).content
    assert post(client, "render", seed=1, edits=[[0, 3.0]], layers=[0, 4]).content == every != first_two
    refused = client.post("/api/render", json={"seed": 1, "edits": [[0, 3.0]], "layers": [0, 5]})
    assert refused.status_code == 400 and "0..4" in refused.text


BAD = [  # (route, raw JSON body, status, part of the message)
    ("render", '{"seed": NaN}', 400, "seed must be an integer"),
    ("render", '{"seed": 1e400}', 400, "seed must be an integer"),
    ("render", '{"seed": 2147483648}', 400, "0..2147483647"),
    ("render", '{"seed": "3"}', 400, "seed must be an integer"),
    ("render", '{"seed": true}', 400, "seed must be an integer"),
    ("render", '{"edits": []}', 400, "seed is missing"),
    ("render", '{"seed": 1, "edits": [[0, NaN]]}', 400, "finite number"),
    ("render", '{"seed": 1, "edits": [[0, -Infinity]]}', 400, "finite number"),
    ("render", '{"seed": 1, "edits": [[0, 31]]}', 400, "-30..30"),
    ("render", '{"seed": 1, "edits": [[0, "2"]]}', 400, "finite number"),
    ("render", '{"seed": 1, "edits": [[3, 1]]}', 400, "direction index"),
    ("render", '{"seed": 1, "edits": [[0, 1], [0, 2]]}', 400, "twice"),
    ("render", '{"seed": 1, "edits": {"0": 1}}', 400, "edits must be a list"),
    ("render", '{"seed": 1, "edits": [0, 1]}', 400, "[index, alpha] pair"),
    ("render", '{"seed": 1, "file": 2}', 404, "no directions file 2"),
    ("render", '{"seed": 1, "file": -1}', 400, "file must be"),
    ("render", '{"seed": 1, "path": "/etc/passwd"}', 400, "unknown fields ['path']"),
    ("render", '{"seed": 1, "layers": [0, 0]}', 400, "not style-based"),
    ("render", '{"seed": 1, "psi": 0.5}', 400, "not style-based"),
    ("render", '{"seed": 1, "panel": "../x", "seq": 1}', 400, "panel must be"),
    ("render", '[1, 2]', 400, "JSON object"),
    ("render", '{"seed": ', 400, "not valid JSON"),
    ("render", '{"seed": ' + "9" * 5000 + "}", 400, "not valid JSON"),
    ("render", "[" * (16 * 1024), 400, "nested too deeply"),  # at the size limit: RecursionError
    ("render", '{"seed": 1, "edits": [' + ", ".join(['[0, 1]'] * 5000) + "]}", 413, "bytes"),
    ("strip", '{"seed": 1, "direction": 3}', 400, "direction must be"),
    ("strip", '{"seed": 1, "direction": 0, "steps": 1000}', 400, "steps must be"),
    ("thumbs", '{"seed": 1, "count": 100}', 400, "count must be"),
    ("thumbs", '{"seed": 1, "edits": []}', 400, "unknown fields"),
]


@pytest.mark.parametrize("route, body, status, message", BAD)
def test_bad_requests_get_a_clear_4xx_and_the_server_goes_on(pair, route, body, status, message):
    _, client = pair
    response = client.post(f"/api/{route}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status and message in response.json()["error"], response.text
    assert post(client, "render", seed=1, edits=[[0, 1.0]]).content


def test_bad_layer_ranges_and_truncation(wplus):
    _, client = wplus
    for body, message in [({"layers": [2, 1]}, "last layer"), ({"layers": [0, 4]}, "last layer"),
                          ({"layers": "coarse"}, "[first, last]"), ({"psi": float("nan")}, "psi"),
                          ({"psi": 1e9}, "psi"), ({"psi": "0.5"}, "psi")]:
        response = client.post("/api/render", content=json.dumps({"seed": 1, **body}),
                               headers={"content-type": "application/json"})  # NaN as JSON's NaN
        assert response.status_code == 400 and message in response.json()["error"]
    assert client.post("/api/render", content='{"seed": 1}', headers={"content-type": "text/plain"}
                       ).status_code == 415


def test_no_path_is_served_and_stale_requests_are_skipped(pair, files):
    explorer, client = pair
    for url in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/files?path=/etc/passwd",
                "/static/index.html", "/explorer/app.py", f"/{files['linear']}", "/api/files/0"]:
        assert client.get(url).status_code == 404, url
    assert client.get("/api/render").status_code == 405
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from another host
    # a request replaced by a newer one of its panel is answered 409, unrendered
    assert post(client, "render", seed=1, panel="tab-a", seq=5)
    stale = client.post("/api/render", json={"seed": 1, "panel": "tab-a", "seq": 4})
    assert stale.status_code == 409 and stale.json()["stale"]
    assert post(client, "render", seed=1, panel="tab-b", seq=1)  # other panels are not affected
    # bound to 127.0.0.1, the app refuses other Host names (DNS rebinding)
    guarded = ExplorerApp(explorer).asgi(["127.0.0.1", "localhost"])
    assert TestClient(guarded, base_url="http://evil.example").get("/").status_code == 400
    assert TestClient(guarded, base_url="http://127.0.0.1:8000").get("/").status_code == 200


def test_bound_to_ipv6_loopback_the_app_takes_its_bracketed_host_only(pair):
    """host=::1: the Host header of a browser at http://[::1]:port/ is ``[::1]:port``; it and
    ``[::1]`` are served, other hosts (and malformed headers) refused as under 127.0.0.1."""
    from explorer.app import LOOPBACK, host_name

    explorer, _ = pair
    client = TestClient(ExplorerApp(explorer).asgi(LOOPBACK["::1"]))
    for host in ("[::1]:8000", "[::1]", "[::1]:65535", "localhost:8000"):
        assert client.get("/", headers={"host": host}).status_code == 200, host
    for host in ("[::2]:8000", "evil.example", "evil.example:8000", "127.0.0.1:8000", "[::1]x",
                 "[::1]:80:80", "[", "", "[::1]@evil.example"):
        assert client.get("/", headers={"host": host}).status_code == 400, host
    assert host_name("[::1]:8000") == "[::1]" and host_name("LocalHost:1") == "localhost"
    assert host_name("[::1") is None and host_name(None) is None
    try:  # the server explore.py starts for host=::1 guards its app the same way
        server, sock, url = make_server(ExplorerApp(explorer), "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with sock:
        assert url.startswith("http://[::1]:")
        assert TestClient(server.config.app, base_url=url).get("/").status_code == 200
        assert TestClient(server.config.app, base_url="http://evil.example").get("/").status_code == 400


def test_open_refuses_files_of_another_generator(files):
    with pytest.raises(UserError, match="was made for generator"):
        Explorer.open([files["linear"], files["other"]], generator_cfg=None)
    with pytest.raises(UserError, match="directions file not found"):
        Explorer.open([files["linear"].parent / "missing.pt"], generator_cfg=None)
    with pytest.raises(UserError, match="device=cuda:99"):
        Explorer.open([files["linear"]], generator_cfg=None, device="cuda:99")


@pytest.mark.slow
def test_explore_refuses_bad_input_with_one_line_and_status_2(files, tmp_path, caplog, monkeypatch):
    import logging

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import explore
    from common.runs import exit_on_setup_error

    # the command line: two files made for different generators
    done = subprocess.run([sys.executable, str(ROOT / "explore.py"),
                           f"directions=[{files['linear']},{files['other']}]"], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in out, out[-2000:]
    assert len([line for line in out.splitlines() if "was made for generator" in line]) == 1, out
    assert not any(tmp_path.iterdir())  # it writes nothing
    # the same path in-process (the script's main, without a second interpreter): a missing file
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("explore", overrides=[f"directions={tmp_path}/missing.pt"])
    monkeypatch.setattr(logging, "shutdown", lambda: None)  # keep this session's log handlers
    with pytest.raises(SystemExit) as exit_:
        exit_on_setup_error(explore.explore, cfg, explore.log)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert exit_.value.code == 2 and len(errors) == 1 and "directions file not found" in errors[0]


def test_explore_names_the_extra_when_starlette_is_missing(files, monkeypatch):
    from omegaconf import OmegaConf

    import explore

    monkeypatch.setitem(sys.modules, "starlette", None)  # import starlette -> ImportError
    cfg = OmegaConf.create({"directions": str(files["linear"])})
    with pytest.raises(UserError, match=r"pip install -e '\.\[explore\]'"):
        explore.explore(cfg)


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    if not Path(CHROMIUM).exists():
        return f"no {CHROMIUM}: install Debian's Chromium with `apt-get install chromium`"
    return None


def wait(page, predicate: str, arg=None, timeout: float = 20.0):
    """Poll ``predicate`` (a JS function) until true: the page's Content-Security-Policy
    forbids the eval behind Playwright's wait_for_function."""
    end = time.monotonic() + timeout
    while not page.evaluate(predicate, arg):
        assert time.monotonic() < end, f"timed out waiting for {predicate}"
        time.sleep(0.05)


@contextmanager
def serve(app):
    """The app on a live server (a free port) for the test's duration: its address."""
    server, sock, url = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def browser(playwright):
    """Headless Debian Chromium, with nothing that reaches the network."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


def open_page(chromium, url: str):
    """A new page at ``url``: ``(page, its JS errors, the bodies of its render requests)``."""
    page = chromium.new_page()
    errors, bodies = [], []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("request", lambda r: bodies.append(r.post_data_json)
            if r.url.endswith("/api/render") else None)
    page.goto(url)
    return page, errors, bodies


RENDERS = "([id, n]) => Number(document.getElementById(id)?.dataset.renders || 0) > n"


def shown(page, id: str = "image-0") -> tuple[int, list[int]]:
    """How many images the page has shown in ``id`` and the RGBA pixels of the last one."""
    wait(page, "(id) => document.getElementById(id).complete", id)
    return tuple(page.evaluate("""(id) => { const img = document.getElementById(id);
        const canvas = Object.assign(document.createElement('canvas'),
                                     {width: img.naturalWidth, height: img.naturalHeight});
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        return [Number(img.dataset.renders),
                Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)]; }""",
                               id))


def pixels(png: bytes) -> list[int]:
    from PIL import Image

    return list(Image.open(io.BytesIO(png)).convert("RGBA").tobytes())


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_page_in_a_real_browser(files):
    """Headless Chromium on the live server: labels, a slider that changes the image, a seed
    switched from a thumbnail, the second panel beside the first."""
    from playwright.sync_api import sync_playwright

    explorer = Explorer.open([files["linear"], files["warped"]], generator_cfg=None)
    with serve(ExplorerApp(explorer, seed=3, thumbnails=4)) as url, sync_playwright() as p:
        chromium = browser(p)
        page, errors, bodies = open_page(chromium, url)
        wait(page, RENDERS, ["strip-1", 0])
        assert page.text_content("#label-0-0") == "direction 0: x, purity 0.75"
        assert page.text_content("#label-1-1") == "direction 1"
        count, before = shown(page)
        page.eval_on_selector("#slider-0-1", """(el) => { el.value = 2.4;
            el.dispatchEvent(new Event('input', {bubbles: true})); }""")
        wait(page, RENDERS, ["image-0", count])
        count, after = shown(page)
        alpha = page.eval_on_selector("#slider-0-1", "(el) => Number(el.value)")
        assert bodies[-1]["edits"] == [[1, alpha]] and after != before
        assert after == pixels(expected(explorer.generator, explorer.files[0].directions, 3,
                                        [(1, alpha)]))
        wait(page, "() => document.getElementById('thumbs').dataset.seeds === '1,2,4,5'")
        box = page.locator("#thumbs").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 3 / 8, box["y"] + box["height"] / 2)
        wait(page, RENDERS, ["image-0", count])
        assert page.input_value("#seed") == "2" and bodies[-1]["seed"] == 2
        assert shown(page)[1] not in (before, after)
        assert page.text_content("#status") == "" and not errors
        chromium.close()


def test_labels_of_a_bad_evaluation_are_absent_not_nan(tmp_path):
    """A NaN or inf in the effect matrix leaves that direction unlabelled (no "purity nan");
    an evaluation.json nested too deeply leaves all unlabelled, with no traceback."""
    from explorer.render import direction_labels

    path = tmp_path / "directions.pt"
    (tmp_path / "evaluation.json").write_text(json.dumps({
        "directions": str(path), "label": "v", "results": {"v": {"factors": ["x", "hue"],
            "effect_matrix": [[float("nan"), 0.1], [0.2, 0.1], [float("inf"), 0.0]]}}}))
    assert direction_labels(path, 3) == ["direction 0", "direction 1: x, purity 0.67",
                                         "direction 2"]
    (tmp_path / "evaluation.json").write_text("[" * 100_000)
    assert direction_labels(path, 3) == ["direction 0", "direction 1", "direction 2"]

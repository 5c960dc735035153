"""The explorer's text box: a slider for a typed prompt (StyleCLIP's global directions of the
files' generator in S): the API (the render equals s + alpha ds rendered by the generator),
refusals, explore.py's set-up from its config (the relevance cached and read back), and the
page in a real headless Chromium."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_world_clip
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_explore import (
    RENDERS,
    TINY_STYLEGAN,
    browser,
    browser_missing,
    draw,
    open_page,
    pixels,
    post,
    save,
    serve,
    shown,
    wait,
)
from test_styleclip import ColourClip

from common.images import png_bytes
from directions import LinearDirections
from editing.styleclip import GlobalDirections, ProbeSettings
from generators import random_generator

pytest.importorskip("starlette", reason="the explorer's extra: pip install -e '.[explore]'")
from starlette.testclient import TestClient  # noqa: E402

from explorer.app import ExplorerApp  # noqa: E402
from explorer.render import Explorer  # noqa: E402

SETTINGS = ProbeSettings(images=2, step=3.0, std_samples=100)


@pytest.fixture()
def s_file(tmp_path):
    g = random_generator("stylegan2", space="s", **TINY_STYLEGAN)
    (tmp_path / "s").mkdir()
    return save(tmp_path / "s" / "directions.pt", LinearDirections(g.latent_dim, 2, init_seed=3), g, "sefa")


def with_text(path, cache_dir=None):
    explorer = Explorer.open([path], generator_cfg=None)
    directions = GlobalDirections(explorer.generator, ColourClip(), SETTINGS, cache_dir)
    explorer.enable_text(directions, "a shape", 0.1, 3.0)
    return explorer, TestClient(ExplorerApp(explorer).asgi())


def test_a_typed_prompt_adds_a_slider_that_renders_its_global_direction(s_file, tmp_path):
    explorer, client = with_text(s_file, tmp_path / "cache")
    assert client.get("/api/info").json()["text"] == {
        "enabled": True, "reason": None, "neutral": "a shape", "alpha_range": 3.0, "sliders": []}
    answer = client.post("/api/text", json={"prompt": "a red shape"}).json()
    assert answer["index"] == 0 and answer["label"] == "a red shape (from a shape)"
    assert answer["channels"] > 0 and answer["alpha_limit"] == 30.0
    ds = explorer.text_sliders[0]["ds"]
    g, d = explorer.generator, explorer.files[0].directions
    s = draw(g, 1)
    with torch.no_grad():
        want = png_bytes(g(d.apply(s, [(0, 1.0)]) + 2.0 * ds), nrow=1)
    assert post(client, "render", seed=1, edits=[[0, 1.0]], text=[[0, 2.0]]).content == want
    # a strip of a file's direction keeps the text edit
    strip = post(client, "strip", seed=1, direction=1, steps=3, text=[[0, 2.0]]).content
    assert strip != post(client, "strip", seed=1, direction=1, steps=3).content
    assert client.get("/api/info").json()["text"]["sliders"] == [
        {"index": 0, "label": "a red shape (from a shape)"}]
    # the relevance was cached: a second explorer reads it back
    again = GlobalDirections(explorer.generator, ColourClip(), SETTINGS, tmp_path / "cache")
    assert again.from_cache and torch.equal(again.relevance, explorer.text.relevance)


@pytest.mark.parametrize("route, body, message", [
    ("render", {"seed": 1, "text": [[0, 1.0]]}, "at most 0"),
    ("text", {"prompt": ""}, "prompt must be a text"),
    ("text", {"prompt": "x" * 201}, "1..200"),
    ("text", {"prompt": "a red shape", "path": "/etc"}, "unknown fields"),
    ("text", {"prompt": 3}, "prompt must be a text"),
])
def test_bad_text_requests_get_a_clear_4xx(s_file, route, body, message):
    _, client = with_text(s_file)
    response = client.post(f"/api/{route}", json=body)
    assert response.status_code == 400 and message in response.json()["error"]


def test_text_sliders_on_a_w_plus_file_move_the_styles_of_its_codes(tmp_path):
    """A file in W+ (or W, Z) of a StyleGAN2: the text edit is added to the styles of the
    edited codes and rendered from S; a layer range mixes the codes first."""
    g = random_generator("stylegan2", space="w+", **TINY_STYLEGAN)
    (tmp_path / "w").mkdir()
    path = save(tmp_path / "w" / "directions.pt", LinearDirections(8, 2, init_seed=1), g, "sefa")
    explorer = Explorer.open([path], generator_cfg=None)
    with explorer.styles_view() as styled:
        explorer.enable_text(GlobalDirections(styled, ColourClip(), SETTINGS), "a shape", 0.1, 3.0)
    assert explorer.generator.space == "w+"  # back in the files' view
    client = TestClient(ExplorerApp(explorer).asgi())
    assert client.post("/api/text", json={"prompt": "a red shape"}).status_code == 200
    g, d, ds = explorer.generator, explorer.files[0].directions, explorer.text_sliders[0]["ds"]
    w = draw(g, 1)
    edited = d.apply(w, [(0, 1.0)])
    with torch.no_grad():
        styles = torch.cat(g.styles(g.to_layers(edited)), dim=1)
        with explorer.styles_view():
            want = png_bytes(g(styles + 2.0 * ds), nrow=1)
            plain = png_bytes(g(styles), nrow=1)
    assert post(client, "render", seed=1, edits=[[0, 1.0]], text=[[0, 2.0]]).content == want
    assert post(client, "render", seed=1, edits=[[0, 1.0]]).content == plain  # S renders W+ exactly
    mixed = post(client, "render", seed=1, edits=[[0, 1.0]], text=[[0, 2.0]], layers=[0, 1]).content
    assert mixed not in (want, plain)


def test_no_text_box_without_s_space(tmp_path):
    import explore

    g = random_generator("dcgan", latent_dim=8, resolution=16, width=4)
    (tmp_path / "z").mkdir()
    path = save(tmp_path / "z" / "directions.pt", LinearDirections(8, 2, init_seed=1), g, "voynov")
    explorer = Explorer.open([path], generator_cfg=None)
    with pytest.raises(Exception, match="S space"):
        GlobalDirections(explorer.generator, ColourClip(), SETTINGS)
    explore.setup_text(explorer, explore_cfg())
    client = TestClient(ExplorerApp(explorer).asgi())
    info = client.get("/api/info").json()["text"]
    assert info["enabled"] is False and "StyleGAN2 or StyleGAN3" in info["reason"]
    response = client.post("/api/text", json={"prompt": "a red shape"})
    assert response.status_code == 400 and "S space" in response.json()["error"]
    with pytest.raises(Exception, match="text.enabled=true"):
        explore.setup_text(explorer, explore_cfg("text.enabled=true"))


def explore_cfg(*overrides):
    from conftest import CONFIGS

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("explore", overrides=["directions=x.pt", *overrides])


def test_explore_sets_the_text_box_up_from_its_config(s_file, tmp_path):
    import explore

    clip = tiny_world_clip(tmp_path)
    overrides = [f"clip.path={clip}", "text.images=2", "text.std_samples=100",
                 f"text.cache_dir={tmp_path / 'cache'}"]
    explorer = Explorer.open([s_file], generator_cfg=None)
    explore.setup_text(explorer, explore_cfg(*overrides))
    assert explorer.text is not None and not explorer.text.from_cache
    assert explorer.add_text("a larger red circle")["label"] == "a larger red circle (from a shape)"
    with pytest.raises(Exception, match="does not know the words"):
        explorer.add_text("a zebra")
    second = Explorer.open([s_file], generator_cfg=None)
    explore.setup_text(second, explore_cfg(*overrides))
    assert second.text.from_cache
    explore.setup_text(second, explore_cfg(*overrides, "text.enabled=false"))


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_text_box_in_a_real_browser(s_file):
    """Headless Chromium: type a prompt, press the button, a slider appears in the panel, and
    moving it sends the text edit and changes the image to the generator's render of it."""
    from playwright.sync_api import sync_playwright

    explorer, _ = with_text(s_file)
    with serve(ExplorerApp(explorer, seed=3, thumbnails=2)) as url, sync_playwright() as p:
        chromium = browser(p)
        page, errors, bodies = open_page(chromium, url)
        wait(page, RENDERS, ["strip-0", 0])
        assert page.is_visible("#text-box") and page.input_value("#neutral") == "a shape"
        page.fill("#prompt", "a red shape")
        page.click("#add-text")
        wait(page, "() => !!document.getElementById('slider-0-text0')")
        assert page.text_content("#label-0-text0") == "text: a red shape (from a shape)"
        assert "channels" in page.text_content("#text-note")
        count, _ = shown(page)
        page.eval_on_selector("#slider-0-text0", """(el) => { el.value = 1.5;
            el.dispatchEvent(new Event('input', {bubbles: true})); }""")
        wait(page, RENDERS, ["image-0", count])
        assert bodies[-1]["text"] == [[0, 1.5]]
        g = explorer.generator
        with torch.no_grad():
            want = png_bytes(g(draw(g, 3) + 1.5 * explorer.text_sliders[0]["ds"]), nrow=1)
        assert shown(page)[1] == pixels(want)
        assert page.text_content("#status") == "" and not errors
        chromium.close()

"""The explorer's web app: a small ASGI app (Starlette) serving one hand-written page and four
JSON-in endpoints, run by uvicorn.

    GET  /             the page (explorer/static/index.html: HTML, CSS and JS, nothing fetched
                       from another host)
    GET  /api/info     the generator, the files (labels, alpha ranges), the limits
    POST /api/render   {file, seed, edits: [[k, alpha], ...], layers: [a, b] | null, psi,
                        transform: [x, y, angle] | null (StyleGAN3's input transform)}  -> PNG
    POST /api/strip    the same + {direction, steps}: direction k walked over its alpha range
    POST /api/thumbs   {seed, count, psi, transform}: the unedited images of nearby seeds -> PNG row
                       (their seeds in the X-Seeds header)

Safe by default: only these routes exist (nothing a request holds becomes a path; files are
referred to by index), every field is checked (type, finiteness, bounds; unknown fields are
refused) and a mistake is a 4xx JSON ``{"error": ...}`` after which the server goes on serving.
Renders run in a worker thread under the explorer's one lock. A request may name its
``panel`` and a ``seq`` number: a request that a newer one of the same panel has replaced by
the time the lock is free is answered 409 without rendering (the page also keeps one request
a panel in flight and sends only the latest state when it returns).
"""
from __future__ import annotations

import json
import math
import re
import socket
from collections import OrderedDict
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from common.errors import UserError
from common.images import png_bytes
from explorer.render import Explorer
from generators.base import TRUNCATION_PSI_RANGE

PAGE = Path(__file__).parent / "static" / "index.html"
MAX_SEED = 2 ** 31 - 1
MAX_THUMBS = 16
STRIP_STEPS = (2, 15)
PSI_RANGE = TRUNCATION_PSI_RANGE  # the bound every generator view is checked against
ALPHA_LIMIT = 10  # |alpha| <= ALPHA_LIMIT x the file's alpha range
TRANSLATE_RANGE = (-1.0, 1.0)  # StyleGAN3's input translation, in half-image units
ANGLE_RANGE = (-180.0, 180.0)  # and rotation, in degrees
MAX_BODY = 16 * 1024
VIEW = {"file", "seed", "edits", "layers", "psi", "transform", "panel", "seq", "text"}
MAX_PROMPT = 200  # characters of a typed prompt
MAX_TEXT_SLIDERS = 16
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; base-uri 'none'")


class RequestError(Exception):
    """A request the explorer refuses: answered ``status`` with ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _show(value) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestError(f"{name} must be an integer in {lo}..{hi}, got {_show(value)}")
    return value


def _float(value, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not lo <= value <= hi:
        raise RequestError(f"{name} must be a finite number in {lo:g}..{hi:g}, got {_show(value)}")
    return float(value)


class ExplorerApp:
    """Request checking and the routes around an ``Explorer``.

    Args:
        explorer: the renderer.
        seed, thumbnails, strip_steps: what the page starts with.
    """

    def __init__(self, explorer: Explorer, seed: int = 0, thumbnails: int = 8,
                 strip_steps: int = 7) -> None:
        self.explorer = explorer
        self.defaults = {"seed": _int(seed, "seed", 0, MAX_SEED),
                         "thumbnails": _int(thumbnails, "thumbnails", 1, MAX_THUMBS),
                         "strip_steps": _int(strip_steps, "strip_steps", *STRIP_STEPS)}
        self.latest: OrderedDict[str, int] = OrderedDict()  # panel -> newest seq seen

    # ---- checking what a request asks for ---------------------------------------------------
    def _view(self, body: dict, allowed: set[str]) -> dict:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise RequestError(f"unknown fields {unknown}; this endpoint takes {sorted(allowed)}")
        files = self.explorer.files
        file = _int(body.get("file", 0), "file", 0, MAX_SEED)
        if file >= len(files):
            raise RequestError(f"no directions file {file}: this explorer shows files "
                               f"0..{len(files) - 1}", status=404)
        if "seed" not in body:
            raise RequestError("seed is missing: pass an integer in 0..2147483647")
        view = {"file": file, "seed": _int(body["seed"], "seed", 0, MAX_SEED)}
        count, limit = files[file].directions.num_directions, ALPHA_LIMIT * files[file].alpha_range
        edits = body.get("edits", [])
        if not isinstance(edits, list) or len(edits) > count:
            raise RequestError(f"edits must be a list of at most {count} [index, alpha] pairs")
        view["edits"] = []
        for edit in edits:
            if not isinstance(edit, list) or len(edit) != 2:
                raise RequestError(f"an edit is an [index, alpha] pair, got {_show(edit)}")
            view["edits"].append((_int(edit[0], "a direction index", 0, count - 1),
                                  _float(edit[1], "alpha", -limit, limit)))
        if len({k for k, _ in view["edits"]}) < len(view["edits"]):
            raise RequestError("edits name a direction twice: one [index, alpha] pair a direction")
        view["text"] = self._text_edits(body.get("text", []))
        g, style_based = self.explorer.generator, self.explorer.style_based
        for key in ("layers", "psi"):
            if body.get(key) is not None and not style_based:
                raise RequestError(f"{key}: generator {g.name!r} is not style-based (it has no "
                                   "per-layer codes and no truncation); leave it out")
        layers = body.get("layers")
        if layers is not None:
            if not isinstance(layers, list) or len(layers) != 2:
                raise RequestError(f"layers must be [first, last] (inclusive), got {_show(layers)}")
            first = _int(layers[0], "the first layer", 0, g.view_num_layers - 1)
            layers = (first, _int(layers[1], "the last layer", first, g.view_num_layers - 1))
        view["layers"] = layers
        psi = body.get("psi")
        view["psi"] = None if psi is None else _float(psi, "psi", *PSI_RANGE)
        view["transform"] = self._transform(body.get("transform"))
        return view

    def _text_edits(self, text) -> list[tuple[int, float]]:
        """The text sliders' ``[[index, alpha], ...]``, checked."""
        sliders = self.explorer.text_sliders
        if not text:
            return []
        if not isinstance(text, list) or len(text) > len(sliders):
            raise RequestError(f"text must be a list of at most {len(sliders)} [index, alpha] pairs "
                               "(one a slider added with the text box)")
        limit = ALPHA_LIMIT * self.explorer.text_settings["alpha_range"]
        out = []
        for edit in text:
            if not isinstance(edit, list) or len(edit) != 2:
                raise RequestError(f"a text edit is an [index, alpha] pair, got {_show(edit)}")
            out.append((_int(edit[0], "a text slider index", 0, len(sliders) - 1),
                        _float(edit[1], "alpha", -limit, limit)))
        if len({k for k, _ in out}) < len(out):
            raise RequestError("text names a slider twice: one [index, alpha] pair a slider")
        return out

    def _transform(self, transform):
        """``[x, y, angle]`` of a StyleGAN3's input transform, checked (None: none)."""
        if transform is None:
            return None
        if not self.explorer.transformable:
            raise RequestError(f"transform: generator {self.explorer.generator.name!r} has no input "
                               "transform (StyleGAN3 has); leave it out")
        if not isinstance(transform, list) or len(transform) != 3:
            raise RequestError(f"transform must be [x, y, angle], got {_show(transform)}")
        return (_float(transform[0], "the x translation", *TRANSLATE_RANGE),
                _float(transform[1], "the y translation", *TRANSLATE_RANGE),
                _float(transform[2], "the angle", *ANGLE_RANGE))

    def _wanted(self, body: dict):
        """None, or a check that no newer request of the same panel has come since."""
        if "panel" not in body and "seq" not in body:
            return None
        panel = body.get("panel")
        if not isinstance(panel, str) or not re.fullmatch(r"[\w:.-]{1,64}", panel):
            raise RequestError(f"panel must be a short name (letters, digits, :_.-), got {_show(panel)}")
        seq = _int(body.get("seq"), "seq", 0, 2 ** 53)
        self.latest[panel] = max(self.latest.pop(panel, seq), seq)
        while len(self.latest) > 1024:  # forget the oldest panels
            self.latest.popitem(last=False)
        return lambda: self.latest.get(panel, seq) <= seq

    # ---- the routes --------------------------------------------------------------------------
    async def _body(self, request: Request) -> dict:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise RequestError("send the request as JSON (Content-Type: application/json)", 415)
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY:
                raise RequestError(f"the request is over {MAX_BODY} bytes", 413)
        try:
            body = json.loads(data)
        except RecursionError:  # e.g. 16 KB of "[": no request of this API nests deeper than 3
            raise RequestError("the request is not valid JSON (nested too deeply)") from None
        except ValueError as err:  # also integers of more than 4,300 digits
            raise RequestError(f"the request is not valid JSON ({err})") from None
        if not isinstance(body, dict):
            raise RequestError("the request must be a JSON object")
        return body

    async def _png(self, request: Request, parse) -> Response:
        """Check the request (``parse(body) -> (render kwargs, nrow, headers)``), render it in
        a worker thread, answer a PNG."""
        try:
            body = await self._body(request)
            kwargs, nrow, headers = parse(body)
            wanted = self._wanted(body)
        except RequestError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)

        def work():
            images = self.explorer.render(wanted=wanted, **kwargs)
            return None if images is None else png_bytes(images, nrow=nrow)

        data = await run_in_threadpool(work)
        if data is None:
            return JSONResponse({"error": "superseded by a newer request of this panel",
                                 "stale": True}, status_code=409)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store", **headers})

    def _render(self, body: dict):
        view = self._view(body, VIEW)
        return dict(view, seeds=[view.pop("seed")]), 1, {}

    def _strip(self, body: dict):
        view = self._view(body, VIEW | {"direction", "steps"})
        f = self.explorer.files[view["file"]]
        k = _int(body.get("direction"), "direction", 0, f.directions.num_directions - 1)
        steps = _int(body.get("steps", self.defaults["strip_steps"]), "steps", *STRIP_STEPS)
        alphas = [f.alpha_range * (2 * i / (steps - 1) - 1) for i in range(steps)]
        kwargs = dict(view, seeds=[view.pop("seed")], strip=(k, alphas))
        return kwargs, steps, {"X-Alphas": ",".join(f"{a:.4g}" for a in alphas)}

    def _thumbs(self, body: dict):
        view = self._view({k: v for k, v in body.items() if k != "count"},
                          {"seed", "psi", "transform", "panel", "seq"})
        count = _int(body.get("count", self.defaults["thumbnails"]), "count", 1, MAX_THUMBS)
        seed = view["seed"]
        start = max(0, min(seed - count // 2, MAX_SEED - count))
        seeds = [s for s in range(start, start + count + 1) if s != seed][:count]
        return {"file": 0, "seeds": seeds, "psi": view["psi"], "transform": view["transform"]}, count, \
            {"X-Seeds": ",".join(map(str, seeds))}

    async def add_text(self, request: Request) -> JSONResponse:
        """``{"prompt": str, "neutral": str (optional)}`` -> the new text slider."""
        try:
            body = await self._body(request)
            unknown = sorted(set(body) - {"prompt", "neutral"})
            if unknown:
                raise RequestError(f"unknown fields {unknown}; this endpoint takes ['neutral', 'prompt']")
            texts = [body.get("prompt"), body.get("neutral", "")]
            if not all(isinstance(t, str) and len(t) <= MAX_PROMPT for t in texts) or not texts[0].strip():
                raise RequestError(f"prompt must be a text of 1..{MAX_PROMPT} characters (neutral "
                                   "too, or left out)")
            if len(self.explorer.text_sliders) >= MAX_TEXT_SLIDERS:
                raise RequestError(f"at most {MAX_TEXT_SLIDERS} text sliders; reload the explorer "
                                   "for a fresh set")
        except RequestError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        try:
            slider = await run_in_threadpool(self.explorer.add_text, texts[0].strip(),
                                             texts[1].strip() or None)
        except UserError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        slider["alpha_limit"] = ALPHA_LIMIT * slider["alpha_range"]
        return JSONResponse(slider)

    def info(self, request: Request) -> JSONResponse:
        info = self.explorer.info()
        for f in info["files"]:
            f["alpha_limit"] = ALPHA_LIMIT * f["alpha_range"]
        return JSONResponse(dict(info, **self.defaults, limits={
            "max_seed": MAX_SEED, "max_thumbnails": MAX_THUMBS, "strip_steps": list(STRIP_STEPS),
            "psi": list(PSI_RANGE), "translate": list(TRANSLATE_RANGE), "angle": list(ANGLE_RANGE)}))

    def asgi(self, allowed_hosts: list[str] | None = None) -> Starlette:
        """The Starlette app; ``allowed_hosts``: the Host headers accepted (None: any)."""
        page = PAGE.read_bytes()
        headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-store"}

        async def index(request: Request) -> Response:
            return HTMLResponse(page, headers=headers)

        async def render(request: Request) -> Response:
            return await self._png(request, self._render)

        async def strip(request: Request) -> Response:
            return await self._png(request, self._strip)

        async def thumbs(request: Request) -> Response:
            return await self._png(request, self._thumbs)

        middleware = []
        if allowed_hosts:  # a page of another site reached by DNS rebinding is refused
            from starlette.middleware import Middleware

            middleware.append(Middleware(HostGuard, allowed_hosts=allowed_hosts))
        return Starlette(routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/info", self.info, methods=["GET"]),
            Route("/api/render", render, methods=["POST"]),
            Route("/api/strip", strip, methods=["POST"]),
            Route("/api/thumbs", thumbs, methods=["POST"]),
            Route("/api/text", self.add_text, methods=["POST"]),
        ], middleware=middleware)


def host_name(header: str | None) -> str | None:
    """The host of a Host header, lower-case and without its port: ``127.0.0.1``,
    ``localhost``, ``[::1]`` (an IPv6 literal keeps its brackets); None for a malformed one."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\[\]:/@\s]+)(?::[0-9]{1,5})?", header or "")
    return match[1].lower() if match else None


class HostGuard:
    """ASGI middleware answering 400 to a request whose Host header names none of
    ``allowed_hosts`` (as ``host_name`` writes them). Not Starlette's TrustedHostMiddleware:
    the older releases this project allows cut ``[::1]:8000`` at its first colon."""

    def __init__(self, app, allowed_hosts: list[str]) -> None:
        self.app, self.allowed = app, {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            if host_name(Headers(scope=scope).get("host")) not in self.allowed:
                await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


LOOPBACK = {"127.0.0.1": ["127.0.0.1", "localhost"], "localhost": ["127.0.0.1", "localhost"],
            "::1": ["[::1]", "localhost"]}


def make_server(app: ExplorerApp, host: str = "127.0.0.1", port: int = 8000):
    """A uvicorn server for ``app`` on a socket bound now (``port=0``: a free port): returns
    ``(server, socket, url)``; run it with ``server.run(sockets=[socket])``. An address that
    cannot be bound raises OSError."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # from now on a browser's connection waits for the server to run
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    config = uvicorn.Config(app.asgi(LOOPBACK.get(host)), log_level="warning", access_log=False)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return uvicorn.Server(config), sock, f"http://{shown}:{port}/"

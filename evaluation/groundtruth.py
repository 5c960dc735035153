"""The encoder protocol of the ground-truth benchmark (Khrulkov et al., ICML 2021; DisCo follows it).

For a directions file and the generator it was made for, on a generator of the shapes world:

1. sample latents, render ``G(latent)``, and take as the code of each image the coordinates of
   its latent along the K directions (``Directions.code``: the projection of the latent, centred
   on the sample mean, onto each unit direction; the potential f_k for RBF warps);
2. train the 4-block convolutional encoder of Locatello et al. (``regressors.encoder``) from the
   generated images to the codes (each code standardised), MSE;
3. apply it to renders of the world itself with their true factors (the world is this project's
   Shapes3D) and hand the encoder's outputs and the factors to the disentanglement metrics.

Images are kept as uint8 in memory and generated without gradients, in batches. A set the
protocol cannot score (one direction, a set without a coordinate per direction, a generator of
another world) is refused up front with one line saying why (``cannot_score``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from common.checks import integer, number
from common.errors import UserError
from datamodules.world import FACTORS, ShapesWorld
from regressors.encoder import CodeEncoder


@dataclass
class ProtocolSettings:
    """The protocol's sizes. Khrulkov et al. generate 500,000 images and score 10,000 points; the
    defaults here are what two CPU cores afford (docs/results.md measures how far the figures
    move against larger runs)."""

    generated: int = 20_000        # generated images the encoder learns from
    steps: int = 2_000             # encoder training steps
    batch_size: int = 128
    lr: float = 1e-3
    world_samples: int = 10_000    # renders of the world the metrics are computed on
    seed: int = 0

    def check(self, prefix: str = "benchmark.protocol") -> "ProtocolSettings":
        integer(self.generated, f"{prefix}.generated", low=2)
        integer(self.steps, f"{prefix}.steps", low=1)
        integer(self.batch_size, f"{prefix}.batch_size", low=1)
        number(self.lr, f"{prefix}.lr", low=0, low_open=True)
        integer(self.world_samples, f"{prefix}.world_samples", low=2)
        integer(self.seed, f"{prefix}.seed", low=0)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def cannot_score(directions, generator) -> str | None:
    """Why the protocol cannot score these directions on this generator, or None."""
    if directions.num_directions < 2:
        return f"{directions.num_directions} direction: the metrics compare codes, they need at least 2"
    if directions.no_code:
        return directions.no_code
    spec = getattr(generator, "regressor_spec", None) or {}
    if spec.get("factors") != "world":
        return (f"generator {getattr(generator, 'name', '?')!r} is not a generator of the shapes world "
                "(its config's regressor.factors is not 'world'): there is no ground truth to render")
    if generator.resolution % 16:
        return f"the encoder reads multiples of 16 pixels; the generator draws {generator.resolution}"
    return None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def from_uint8(images: torch.Tensor, device) -> torch.Tensor:
    return images.to(device).float() / 127.5 - 1.0


@torch.no_grad()
def generated_set(directions, generator, settings: ProtocolSettings, progress: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``settings.generated`` images (uint8, CPU) and their codes ``N x K`` (float, CPU)."""
    rng = torch.Generator().manual_seed(settings.seed)
    latents, images = [], []
    batches = range(0, settings.generated, settings.batch_size)
    for first in tqdm(batches, desc="benchmark: generating", leave=False, disable=not progress):
        z, y = generator.draw(min(settings.batch_size, settings.generated - first), generator=rng)
        images.append(to_uint8(generator(z, y)))
        latents.append(z.cpu())
    latents = torch.cat(latents).float()
    centre = latents.mean(0)
    codes = directions.code(latents, centre.reshape(-1, latents.shape[-1]).mean(0))
    return torch.cat(images), codes.float().cpu()


def train_encoder(images: torch.Tensor, codes: torch.Tensor, settings: ProtocolSettings,
                  device="cpu", progress: bool = True) -> tuple[CodeEncoder, dict]:
    """The encoder trained from uint8 images to standardised codes (MSE), and its held-out R^2
    (the last tenth of the generated set is held out)."""
    n = images.shape[0]
    held = max(1, n // 10)
    mean, std = codes[:-held].mean(0), codes[:-held].std(0).clamp_min(1e-8)
    targets = (codes - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        encoder = CodeEncoder(codes.shape[1], images.shape[-1]).to(device)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=settings.lr)
    rng = torch.Generator().manual_seed(settings.seed + 1)
    encoder.train()
    for _ in tqdm(range(settings.steps), desc="benchmark: training the encoder", leave=False,
                  disable=not progress):
        rows = torch.randint(n - held, (settings.batch_size,), generator=rng)
        loss = F.mse_loss(encoder(from_uint8(images[rows], device)), targets[rows].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    encoder.eval()
    predicted = encode(encoder, images[-held:], settings.batch_size, device)
    residual = (predicted - targets[-held:]).pow(2).mean(0)
    r2 = 1 - residual / targets[-held:].var(0).clamp_min(1e-8)
    return encoder, {"encoder_r2": float(r2.mean()), "encoder_r2_per_code": r2.tolist()}


@torch.no_grad()
def encode(encoder: CodeEncoder, images: torch.Tensor, batch_size: int, device="cpu") -> torch.Tensor:
    """The encoder's codes of uint8 images, in batches (CPU)."""
    return torch.cat([encoder(from_uint8(images[i:i + batch_size], device)).cpu()
                      for i in range(0, images.shape[0], batch_size)])


@torch.no_grad()
def world_set(resolution: int, settings: ProtocolSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders of the world (uint8) and their true factors ``N x 6`` (the order of ``FACTORS``),
    drawn with a seed of their own (the same points for every directions file)."""
    world = ShapesWorld(resolution)
    rng = torch.Generator().manual_seed(10_000 + settings.seed)
    factors = world.sample_factors(settings.world_samples, generator=rng)
    images = torch.cat([to_uint8(world.render(factors[i:i + 1024]))
                        for i in range(0, factors.shape[0], 1024)])
    return images, factors


def encoder_codes(directions, generator, settings: ProtocolSettings | None = None, progress: bool = True
                  ) -> dict:
    """Steps 1-3: the encoder's codes of the world's renders and their true factors, with the
    encoder's fit and the time each step took. ``metrics`` are not computed here (they take
    ``codes`` and ``factors``)."""
    settings = (settings or ProtocolSettings()).check()
    why = cannot_score(directions, generator)
    if why:
        raise UserError(f"the ground-truth protocol cannot score these directions: {why}")
    device = generator.device
    seconds = {}
    start = time.perf_counter()
    images, codes = generated_set(directions, generator, settings, progress)
    seconds["generate"] = time.perf_counter() - start
    start = time.perf_counter()
    encoder, fit = train_encoder(images, codes, settings, device, progress)
    seconds["encoder"] = time.perf_counter() - start
    start = time.perf_counter()
    world_images, factors = world_set(generator.resolution, settings)
    predicted = encode(encoder, world_images, settings.batch_size, device)
    seconds["world"] = time.perf_counter() - start
    return {"codes": predicted, "factors": factors, "factor_names": list(FACTORS), **fit,
            "encoder": encoder, "seconds": {k: round(v, 2) for k, v in seconds.items()}}


@dataclass
class MetricSettings:
    """How the disentanglement metrics are computed (metrics/disentanglement.py)."""

    bins: int = 20                 # MIG / Modularity: histogram bins of codes and continuous factors
    dci_model: str = "hist_gbt"    # gbt (disentanglement_lib's) or hist_gbt (faster)
    factor_vae_train: int = 1000   # FactorVAE: training and evaluation groups of 64
    factor_vae_eval: int = 500

    def check(self, prefix: str = "benchmark.metrics") -> "MetricSettings":
        integer(self.bins, f"{prefix}.bins", low=2)
        if self.dci_model not in ("gbt", "hist_gbt"):
            raise UserError(f"{prefix}.dci_model={self.dci_model!r}: use gbt or hist_gbt")
        integer(self.factor_vae_train, f"{prefix}.factor_vae_train", low=1)
        integer(self.factor_vae_eval, f"{prefix}.factor_vae_eval", low=1)
        return self


#: The benchmark's figures, in the order of its table.
SCORES = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factor_vae",
          "modularity", "sap")


def disentanglement_scores(codes: torch.Tensor, factors: torch.Tensor, encode_factors, metric: MetricSettings,
                           seed: int = 0) -> dict:
    """MIG, DCI, FactorVAE, Modularity and SAP of ``codes`` about the world's ``factors``;
    ``encode_factors(factors) -> codes`` renders and encodes images of chosen factors (the
    FactorVAE score's groups with one factor held)."""
    from metrics.disentanglement import WORLD_KINDS, dci, factor_vae, fixed_factor_sampler, mig, modularity, sap

    codes_np, factors_np = codes.double().numpy(), factors.double().numpy()
    world = ShapesWorld()
    rng = torch.Generator().manual_seed(20_000 + seed)
    sampler = fixed_factor_sampler(lambda n: world.sample_factors(n, generator=rng), encode_factors)
    out = {"mig": mig(codes_np, factors_np, WORLD_KINDS, bins=metric.bins, factor_bins=metric.bins),
           "dci": dci(codes_np, factors_np, WORLD_KINDS, model=metric.dci_model, factor_bins=metric.bins,
                      seed=seed),
           "modularity": modularity(codes_np, factors_np, WORLD_KINDS, bins=metric.bins,
                                    factor_bins=metric.bins),
           "sap": sap(codes_np, factors_np, WORLD_KINDS, seed=seed),
           "factor_vae": factor_vae(codes_np, sampler, len(FACTORS), num_train=metric.factor_vae_train,
                                    num_eval=metric.factor_vae_eval, seed=seed)}
    scores = {"mig": out["mig"]["mig"], "dci_disentanglement": out["dci"]["disentanglement"],
              "dci_completeness": out["dci"]["completeness"],
              "dci_informativeness": out["dci"]["informativeness"],
              "factor_vae": out["factor_vae"]["eval_accuracy"], "modularity": out["modularity"]["modularity"],
              "sap": out["sap"]["sap"]}
    details = {"mig_per_factor": dict(zip(FACTORS, out["mig"]["mig_per_factor"].tolist())),
               "sap_per_factor": dict(zip(FACTORS, out["sap"]["sap_per_factor"].tolist())),
               "dci_importance": out["dci"]["importance"].tolist()}
    return {"scores": {k: float(v) for k, v in scores.items()}, "details": details}


def score(directions, generator, settings: ProtocolSettings | None = None, metric: MetricSettings | None = None,
          progress: bool = True) -> dict:
    """The protocol and the metrics for one directions file: a JSON-ready dict with the
    ``scores`` (``SCORES``), per-factor details, the encoder's fit, the settings and the time."""
    settings = (settings or ProtocolSettings()).check()
    metric = (metric or MetricSettings()).check()
    start = time.perf_counter()
    out = encoder_codes(directions, generator, settings, progress)
    encoder, device = out.pop("encoder"), generator.device
    world = ShapesWorld(generator.resolution)

    def encode_factors(factors):
        images = to_uint8(torch.cat([world.render(factors[i:i + 1024]) for i in range(0, factors.shape[0], 1024)]))
        return encode(encoder, images, 1024, device).double().numpy()

    began = time.perf_counter()
    scored = disentanglement_scores(out.pop("codes"), out.pop("factors"), encode_factors, metric, settings.seed)
    out["seconds"]["metrics"] = round(time.perf_counter() - began, 2)
    out["seconds"]["total"] = round(time.perf_counter() - start, 2)
    return {**scored, **out, "num_directions": directions.num_directions,
            "protocol": settings.to_dict(), "metric_settings": asdict(metric)}


# ---- references --------------------------------------------------------------------------------
def output_names(regressor) -> list[str]:
    """The names of the regressor head's outputs: a class (``shape=1``), a value (``x``), an
    angle's cosine and sine (``hue.cos``, ``hue.sin``)."""
    names = []
    for target in regressor.targets:
        if target.kind == "categorical":
            names += [f"{target.name}={c}" for c in range(target.classes)]
        elif target.kind == "circular":
            names += [f"{target.name}.cos", f"{target.name}.sin"]
        else:
            names.append(target.name)
    return names


@torch.no_grad()
def oracle_directions(generator, regressor, samples: int = 5_000, batch_size: int = 256, seed: int = 0):
    """The supervised reference: for each output of the regressor's head (a class's logit, a
    value, an angle's cosine or sine, standardised), the latent direction whose projection
    predicts it best, fitted by least squares in the generator's editing space on ``samples``
    generated latents (per-layer latents read as their mean code, as ``Directions.code`` does).
    A ``Directions`` of unit vectors, one per output, named in ``meta["labels"]``."""
    from directions import Directions, LinearDirections

    rng = torch.Generator().manual_seed(seed)
    latents, outputs = [], []
    regressor = regressor.to(generator.device).eval()
    for first in range(0, samples, batch_size):
        z, y = generator.draw(min(batch_size, samples - first), generator=rng)
        outputs.append(regressor(generator(z, y)).double().cpu())
        latents.append(z.double().cpu())
    z = torch.cat(latents)
    z = z.mean(1) if z.ndim == 3 else z
    targets = torch.cat(outputs)
    z = z - z.mean(0)
    targets = (targets - targets.mean(0)) / targets.std(0).clamp_min(1e-8)
    weight = torch.linalg.lstsq(z, targets).solution.T  # J x d
    linear = LinearDirections(z.shape[1], weight.shape[0], trainable=False)
    with torch.no_grad():
        linear.weight.copy_(weight.float())
    return Directions(linear, {"method": "oracle", "labels": output_names(regressor),
                               "alpha_range": 3.0}, generator=generator)


@torch.no_grad()
def regressor_codes(regressor, images: torch.Tensor, batch_size: int = 256, device="cpu") -> torch.Tensor:
    """The ceiling: the factor regressor's own head outputs on uint8 images (``N x J``), read
    as codes. It was trained on the world's factors, so no set of directions should beat it."""
    regressor = regressor.to(device).eval()
    return torch.cat([regressor(from_uint8(images[i:i + batch_size], device)).cpu()
                      for i in range(0, images.shape[0], batch_size)])

import torch

from datamodules.latent import LatentDataModule
from datamodules.streams import SeededBatches, batch_seed
from generators import random_generator


def make(n, rng):
    return {"x": torch.randn(n, 3, generator=rng)}


def test_batches_are_a_function_of_seed_step_rank():
    a = SeededBatches(make, 4, seed=0, rank=0)
    assert torch.equal(a.batch(5)["x"], SeededBatches(make, 4, seed=0, rank=0).batch(5)["x"])
    assert not torch.equal(a.batch(5)["x"], a.batch(6)["x"])
    assert not torch.equal(a.batch(5)["x"], SeededBatches(make, 4, seed=0, rank=1, world_size=2).batch(5)["x"])
    assert not torch.equal(a.batch(5)["x"], SeededBatches(make, 4, seed=1, rank=0).batch(5)["x"])


def test_stream_resumes_where_it_stopped():
    full = iter(SeededBatches(make, 2, seed=0))
    batches = [next(full)["x"] for _ in range(6)]
    resumed = iter(SeededBatches(make, 2, seed=0, start=4))
    assert torch.equal(next(resumed)["x"], batches[4])
    assert torch.equal(next(resumed)["x"], batches[5])


def test_seeds_distinct():
    seeds = {batch_seed(s, t, r) for s in range(3) for t in range(50) for r in range(4)}
    assert len(seeds) == 3 * 50 * 4


def test_latent_datamodule_uses_generator_prior():
    g = random_generator(latent_dim=8, width=8)
    dm = LatentDataModule(batch_size=6, seed=0, val_batches=2, generator=g)
    batch = next(iter(dm.train_dataloader()))
    assert batch["latent"].shape == (6, 8) and batch["seed"].dtype == torch.int64
    val = list(dm.val_dataloader())
    assert len(val) == 2 and not torch.equal(val[0]["latent"], batch["latent"])
    assert torch.equal(val[0]["latent"], list(dm.val_dataloader())[0]["latent"])


def test_processes_share_out_the_batches_of_one_process():
    """W processes taking S batches each see the batches one process takes in S * W steps."""
    one = [SeededBatches(make, 3, seed=7).batch(g)["x"] for g in range(6)]
    two = [SeededBatches(make, 3, seed=7, rank=r, world_size=2).batch(s)["x"]
           for s in range(3) for r in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(one, two))

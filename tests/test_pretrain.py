"""GAN pretraining through train.py, on a tiny generator and discriminator."""
import pytest
import torch
from conftest import compose_cfg, run_script

from generators import load_generator
from generators.pretrain import export_checkpoint
from train import train

TINY_GAN = ["experiment=pretrain_dcgan", "run_name=gan", "logger=none", "data.batch_size=8",
            "trainer.max_steps=4", "method.generator.width=8",
            "method.generator.latent_dim=4", "method.discriminator.width=8",
            "method.sample_every_n_steps=2", "callbacks.checkpoint.every_n_train_steps=2",
            "trainer.enable_progress_bar=false"]


def test_pretraining_writes_a_loadable_generator(tmp_path):
    cfg = compose_cfg(TINY_GAN, tmp_path)
    train(cfg)
    out = tmp_path / "gan"
    g = load_generator(out / "generator.pt")
    assert g.latent_dim == 4 and g.discriminator is not None
    assert g(g.sample(3)).shape == (3, 3, 32, 32)
    assert (out / "samples/step_000002.png").is_file() and (out / "samples/final.png").is_file()
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 8  # trainer.max_steps counts batches: 4, two optimizer steps each
    # the checkpoint exports to the same EMA generator as the end of fit did
    exported = load_generator(export_checkpoint(out / "checkpoints/last.ckpt", tmp_path / "e.pt"))
    z = g.sample(2)
    assert torch.allclose(exported(z), g(z))
    # ... and draws the run's fixed-latent grid beside the file: the picture training saved last
    assert (tmp_path / "e_samples.png").read_bytes() == (out / "samples/final.png").read_bytes()
    export_checkpoint(out / "checkpoints/last.ckpt", tmp_path / "bare.pt", samples=False)
    assert (tmp_path / "bare.pt").is_file() and not (tmp_path / "bare_samples.png").exists()


def test_pretraining_resume_continues(tmp_path):
    train(compose_cfg(TINY_GAN + ["trainer.max_steps=2"], tmp_path))
    # a resumed run may change the learning rates (a schedule): the configured ones win over
    # those stored with the optimizer states
    train(compose_cfg(TINY_GAN + ["ckpt_path=last", "method.lr_d=1e-3"], tmp_path))
    ckpt = torch.load(tmp_path / "gan/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 8
    lrs = [s["param_groups"][0]["lr"] for s in ckpt["optimizer_states"]]
    assert lrs == [2e-4, 1e-3]


TINY_STYLEGAN2 = ["experiment=pretrain_stylegan2", "logger=none", "data.batch_size=8",
                  "method.generator.channels=[8,8,8,8]",
                  "method.discriminator.channels=[8,8,8,8]",
                  "method.r1_every=2", "method.sample_every_n_steps=0",
                  "callbacks.checkpoint.every_n_train_steps=2", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_pretraining_runs_and_resumes_on_two_ddp_processes(tmp_path):
    # D's step leaves G without gradients and G's step leaves D without: DDP's own hooks stop
    # such a run, so each step averages the weights it updates itself (averaged_backward).
    def run(*extra):
        result = run_script([*TINY_STYLEGAN2, "trainer=ddp_cpu", "run_name=two", *extra],
                            cwd=tmp_path, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return torch.load(tmp_path / "outputs/two/checkpoints/last.ckpt", weights_only=True)

    first = run("trainer.max_steps=2")
    resumed = run("trainer.max_steps=4", "ckpt_path=last")
    assert first["global_step"] == 4 and resumed["global_step"] == 8
    before, after = first["state_dict"], resumed["state_dict"]
    moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"generator", "discriminator", "ema"} <= moved  # both networks trained on
    g = load_generator(tmp_path / "outputs/two/generator.pt")
    assert g(g.sample(2)).shape == (2, 3, 32, 32)

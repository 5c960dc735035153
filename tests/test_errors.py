"""One error type for a user's mistake (common/errors.py): every script turns it into one line and
exit 2; any other exception keeps its traceback; debug=true or HYDRA_FULL_ERROR=1 keep it for user
mistakes too. A refused pickle is told from a broken file by what the file holds, never by torch's
wording (common/pickles.py)."""
from __future__ import annotations

import io
import logging
import os
import pickle

import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from common.errors import MissingFile, UserError, user_error_in
from common.pickles import RefusedPickle, UnreadableFile, load_weights_only, refused_globals
from common.runs import exit_on_setup_error

log = logging.getLogger("test_errors")


class _Payload:
    """Unpickling this calls os.getcwd (a harmless stand-in for os.system)."""

    def __reduce__(self):
        return (os.getcwd, ())


def _wrapped(cause: BaseException) -> InstantiationException:
    try:
        raise InstantiationException("Error in call to target 'x.Y'") from cause
    except InstantiationException as err:
        return err


def _raiser(err: BaseException):
    def job(cfg):
        raise err
    return job


def test_a_user_error_is_one_line_and_exit_2(caplog, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = OmegaConf.create({"debug": False})
    for err in (UserError("seed=-1: expected an integer >= 0"), MissingFile("no such file: a.pt"),
                _wrapped(UserError("generator.truncation_psi=5: expected ..."))):
        with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
            exit_on_setup_error(_raiser(err), cfg, log)
        assert stop.value.code == 2
        assert len(caplog.records[-1].getMessage().splitlines()) == 1


@pytest.mark.parametrize("err", [RuntimeError("a bug"), TypeError("bad operand"), ValueError("torch said so"),
                                 _wrapped(TypeError("a bug inside a constructor"))])
def test_anything_else_keeps_its_traceback(err, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(type(err)):
        exit_on_setup_error(_raiser(err), OmegaConf.create({"debug": False}), log)


def test_debug_or_hydra_full_error_keeps_the_chain_of_a_user_error(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    err = _wrapped(UserError("seed=-1"))
    with pytest.raises(InstantiationException) as caught:
        exit_on_setup_error(_raiser(err), OmegaConf.create({"debug": True}), log)
    assert isinstance(caught.value.__cause__, UserError)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError):
        exit_on_setup_error(_raiser(UserError("seed=-1")), OmegaConf.create({"debug": False}), log)


def test_user_error_in_follows_the_cause_chain():
    assert user_error_in(_wrapped(UserError("x"))).args == ("x",)
    assert user_error_in(_wrapped(TypeError("x"))) is None
    assert isinstance(MissingFile("x"), FileNotFoundError) and isinstance(UserError("x"), ValueError)


def _unsafe_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, buffer)
    return buffer.getvalue()


def test_a_refused_pickle_names_its_globals_and_runs_nothing(tmp_path, monkeypatch):
    path = tmp_path / "unsafe.pt"
    path.write_bytes(_unsafe_bytes())
    called = []
    monkeypatch.setattr(os, "getcwd", lambda: called.append(1))
    with pytest.raises(RefusedPickle) as caught:
        load_weights_only(path)
    assert caught.value.found == ["posix.getcwd"] and not called
    assert "may run code" in str(caught.value)


def test_refusal_is_told_by_type_not_by_torchs_wording(tmp_path, monkeypatch):
    """If torch rewords its weights-only error, the refusal is still a RefusedPickle and a text
    file still an UnreadableFile: the file's own opcodes decide."""
    unsafe, text = tmp_path / "unsafe.pt", tmp_path / "text.pt"
    unsafe.write_bytes(_unsafe_bytes())
    text.write_text("not a torch file")

    def reworded(*args, **kwargs):
        raise pickle.UnpicklingError("something torch may say one day")

    monkeypatch.setattr(torch, "load", reworded)
    with pytest.raises(RefusedPickle):
        load_weights_only(unsafe)
    with pytest.raises(UnreadableFile, match="neither a torch zip file nor a pickle"):
        load_weights_only(text)


def test_allowed_globals_and_plain_files_read(tmp_path):
    import argparse

    path = tmp_path / "ns.pt"
    torch.save({"args": argparse.Namespace(size=8), "w": torch.ones(1)}, path)
    assert refused_globals(path.read_bytes()) == ["argparse.Namespace"]
    assert refused_globals(path.read_bytes(), allowed=[argparse.Namespace]) == []
    assert load_weights_only(path, allowed=[argparse.Namespace])["args"].size == 8
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(UnreadableFile, match="empty file"):
        load_weights_only(tmp_path / "empty.pt")


def test_a_bug_in_your_own_networks_constructor_keeps_its_traceback():
    """The adapter turns a wrong target or wrong arguments into one line, but what the network's
    own constructor raises is a bug in that code: its traceback stays."""
    from generators.adapter import _build

    with pytest.raises(UserError, match="PYTHONPATH"):
        _build({"_target_": "no_such_module.Net"})
    with pytest.raises(UserError, match="unexpected keyword"):
        _build({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2, "colour": 1})
    with pytest.raises(InstantiationException) as caught:
        _build({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": "two"})
    assert not isinstance(caught.value, UserError) and isinstance(caught.value.__cause__, TypeError)

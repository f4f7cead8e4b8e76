"""Import CPC_audio checkpoints (the Libri-light and ZeroSpeech 2021 CPC models) as
cpc_seq checkpoints: ``cpc-seq audio import-checkpoint --from cpc_audio CHECKPOINT.pt OUT.pt``.

Reads the two containers CPC_audio writes: a training checkpoint (``gEncoder`` holds
the encoder and the AR network, ``cpcCriterion`` the prediction network, plus
``optimizer`` and ``best``) with ``checkpoint_args.json`` beside it (or ``--args``), and
the torch.hub file (``config`` holds the args, ``weights`` the model). Both are read with
``torch.load(weights_only=True)``: nothing in the file is executed.

The architecture comes from the args, mapped onto :class:`~cpc_seq.audio.model.ModelConfig`:

==========================  =====================================================
CPC_audio                   cpc_seq
==========================  =====================================================
``encoder_type cpc``        encoder ``paper`` (same kernels, strides, padding)
``hiddenEncoder H``         ``encoder_channels H``
``normMode layerNorm``      ``encoder_norm channel_unbiased`` (its ChannelNorm)
``normMode batchNorm/ID``   ``encoder_norm batch`` / ``none``
``arMode LSTM/GRU``         ``context lstm`` / ``gru``
``nLevelsGRU``, hiddenGar   ``context_layers``, ``dim_c``
``rnnMode transformer``     ``predictor relpos_transformer`` (``_shared`` with
                            ``multihead_rnn``), ``predictor_window`` =
                            sizeWindow / 160 - nPredicts, 8 heads, width 2048,
                            dropout 0.1 inside, ``predictor_dropout`` 0.5 with
                            ``--dropout``
``nPredicts``               ``n_steps``
``negativeSamplingExt``     ``loss.negatives cross_batch``, ``loss.n_negatives``
(no input normalisation)    ``input_norm none``
==========================  =====================================================

Anything else that changes the model (``encoder_type mfcc/lfb``, ``normMode
instanceNorm``, ``arMode RNN/transformer/no_ar``, ``cpc_mode reverse/bert``, ``abspos``,
several ``load`` paths) is refused with one line naming it. Prediction-network options
without a counterpart (another ``rnnMode``, ``speakerEmbedding``) are refused too unless
``--no-heads``, which imports encoder and context with fresh linear heads.
``--ar-level K`` keeps the first K LSTM layers, as the ZeroSpeech 2021 scripts'
``--gru_level K`` does (c is then layer K's output; the prediction heads, trained on the
top layer, are replaced by fresh ones).

Every tensor of the source must land in the model and every model tensor must come from
the source, with the shape the args imply; otherwise nothing is written.

Frames: z and c are CPC_audio's for the first ``N // 160`` frames of an N-sample input
(CPC_audio's convolutions give one more frame for some N; cpc_seq drops it).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cpc_seq.audio.model.cpc import ModelConfig, build_model
from cpc_seq.config import from_dict, to_dict
from cpc_seq.errors import ConfigError, DataError

SOURCES = ("cpc_audio",)

#: CPC_audio's own defaults (its ``CPC_v2`` argument parser) for the args that shape the
#: model, used where an older args file lacks a key, as CPC_audio's loader does.
ARG_DEFAULTS: dict[str, Any] = {
    "encoder_type": "cpc", "hiddenEncoder": 256, "normMode": "layerNorm",
    "arMode": "LSTM", "hiddenGar": 256, "nLevelsGRU": 1, "cpc_mode": None,
    "rnnMode": "transformer", "nPredicts": 12, "multihead_rnn": False, "dropout": False,
    "abspos": False, "sizeWindow": 20480, "speakerEmbedding": 0,
    "negativeSamplingExt": 128, "load": None, "samplingType": "samespeaker",
}

_NORMS = {"layerNorm": "channel_unbiased", "batchNorm": "batch", "ID": "none"}
_CONTEXTS = {"LSTM": "lstm", "GRU": "gru"}
#: CPC_audio's per-step prediction layer tensors -> :class:`~cpc_seq.nn.relpos.RelPosCausalLayer`
_HEAD_KEYS = {
    "multihead.Wq.weight": "q.weight", "multihead.Wk.weight": "k.weight",
    "multihead.Wv.weight": "v.weight", "multihead.Wo.weight": "o.weight",
    "multihead.Att.Krelpos": "rel", "ln_multihead.weight": "norm1.weight",
    "ln_multihead.bias": "norm1.bias", "ffnetwork.lin1.weight": "ff1.weight",
    "ffnetwork.lin1.bias": "ff1.bias", "ffnetwork.lin2.weight": "ff2.weight",
    "ffnetwork.lin2.bias": "ff2.bias", "ln_ffnetwork.weight": "norm2.weight",
    "ln_ffnetwork.bias": "norm2.bias",
}
_HEAD_BUFFERS = ("multihead.Att.z", "multihead.Att.mask")
#: The transformer prediction layer's fixed sizes in CPC_audio (not in its args).
TRANSFORMER_HEADS, TRANSFORMER_FF, TRANSFORMER_DROPOUT = 8, 2048, 0.1
DOWNSAMPLING = 160


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        what = "empty" if not head else "a text file" if all(
            32 <= b < 127 or b in (9, 10, 13) for b in head) else "another format"
        raise DataError(f"{path}: not a readable torch checkpoint ({what})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        reason = f": {found[1]}" if found else ""
        raise DataError(f"{path}: refused: holds pickled objects other than tensors and "
                        f"plain data, which would run code when loaded{reason}") from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error, KeyError, IndexError,
            TypeError, AttributeError, UnicodeDecodeError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not a readable torch checkpoint (truncated or another "
                        f"format: {reason})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CPC_audio checkpoint (holds a {type(obj).__name__}, "
                        "not a dict)")
    return obj


def _read_args(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: args file not found (CPC_audio writes checkpoint_args.json "
                        "beside its checkpoints; give it with --args)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable CPC_audio args file ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a CPC_audio args file (expected a JSON object)")
    return data


def read_cpc_audio(path: str | Path, args_path: str | Path | None = None
                   ) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor] | None]:
    """Read a CPC_audio checkpoint: ``(args, model_state, criterion_state or None)``.

    ``args`` are the file's args laid over :data:`ARG_DEFAULTS`; ``args_path`` overrides
    where they come from (default: ``checkpoint_args.json`` beside a training
    checkpoint, the ``config`` entry of a torch.hub file).
    """
    path = Path(path)
    obj = _load(path)
    if obj.get("format") == "cpc_seq":
        raise DataError(f"{path}: already a cpc_seq checkpoint; nothing to import")
    if "gEncoder" in obj:
        model, crit = obj["gEncoder"], obj.get("cpcCriterion")
        args = _read_args(Path(args_path) if args_path else path.parent /
                          "checkpoint_args.json")
    elif "weights" in obj and "config" in obj:
        model, crit = obj["weights"], None
        args = _read_args(Path(args_path)) if args_path else obj["config"]
        if not isinstance(args, dict):
            raise DataError(f"{path}: its 'config' entry is not a dict of CPC_audio args")
    else:
        keys = ", ".join(sorted(map(str, obj))[:6]) or "none"
        raise DataError(f"{path}: not a CPC_audio checkpoint (no 'gEncoder' or "
                        f"'weights'/'config' entry; its keys: {keys})")
    for name, sd in (("gEncoder", model), ("cpcCriterion", crit)):
        if sd is not None and (not isinstance(sd, dict)
                               or not all(isinstance(v, Tensor) for v in sd.values())):
            raise DataError(f"{path}: its '{name}' entry is not a state dict of tensors")
    return {**ARG_DEFAULTS, **args}, dict(model), None if crit is None else dict(crit)


def _refuse(option: str, why: str = "") -> ConfigError:
    return ConfigError(f"CPC_audio option {option} is not supported by cpc_seq"
                       + (f" ({why})" if why else ""))


def _int_arg(args: dict[str, Any], key: str) -> int:
    v = args.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"CPC_audio args: {key}={v!r} is not a positive integer")
    return v


def model_config_from_args(args: dict[str, Any], heads: bool = True,
                           ar_level: int | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of CPC_audio ``args`` (see the module docstring's table).

    Raises:
        ConfigError: one line naming an option cpc_seq has no counterpart for.
    """
    if args.get("encoder_type") != "cpc":
        raise _refuse(f"encoder_type {args.get('encoder_type')}", "only the cpc encoder")
    norm = args.get("normMode")
    if norm not in _NORMS:
        raise _refuse(f"normMode {norm}", "layerNorm, batchNorm and ID are")
    ar = args.get("arMode")
    if ar not in _CONTEXTS:
        raise _refuse(f"arMode {ar}", "LSTM and GRU are")
    if args.get("cpc_mode") not in (None, "none"):
        raise _refuse(f"cpc_mode {args.get('cpc_mode')}")
    load = args.get("load")
    if isinstance(load, list) and len(load) > 1:
        raise _refuse("load with several checkpoints", "a concatenated model")
    h_enc, h_ar = _int_arg(args, "hiddenEncoder"), _int_arg(args, "hiddenGar")
    levels, steps = _int_arg(args, "nLevelsGRU"), _int_arg(args, "nPredicts")
    if ar_level is not None:
        if not 1 <= ar_level <= levels:
            raise ConfigError(f"--ar-level {ar_level}: the checkpoint has {levels} "
                              f"{ar} layer{'s' if levels > 1 else ''}")
        levels = ar_level
    cfg: dict[str, Any] = {
        "encoder": "paper", "encoder_channels": h_enc, "encoder_norm": _NORMS[norm],
        "context": _CONTEXTS[ar], "dim_c": h_ar, "context_layers": levels,
        "n_steps": steps, "input_norm": "none",
    }
    if heads:
        rnn_mode = args.get("rnnMode")
        if rnn_mode != "transformer":
            raise _refuse(f"rnnMode {rnn_mode}", "prediction network; --no-heads imports "
                          "encoder and context with fresh heads")
        if args.get("abspos"):
            raise _refuse("abspos", "prediction network; --no-heads imports encoder and "
                          "context with fresh heads")
        if args.get("speakerEmbedding"):
            raise _refuse(f"speakerEmbedding {args.get('speakerEmbedding')}", "prediction "
                          "network; --no-heads imports encoder and context with fresh heads")
        if h_ar != h_enc:
            raise ConfigError(f"CPC_audio args: hiddenGar {h_ar} != hiddenEncoder {h_enc} "
                              "with rnnMode transformer (CPC_audio cannot build that model)")
        window = _int_arg(args, "sizeWindow") // DOWNSAMPLING - steps
        if window <= 0:
            raise ConfigError(f"CPC_audio args: sizeWindow {args['sizeWindow']} leaves no "
                              f"frames for {steps} predictions")
        cfg.update(
            predictor="relpos_transformer_shared" if args.get("multihead_rnn")
            else "relpos_transformer",
            transformer_heads=TRANSFORMER_HEADS, predictor_ff=TRANSFORMER_FF,
            dropout=TRANSFORMER_DROPOUT, predictor_window=window,
            predictor_dropout=0.5 if args.get("dropout") else 0.0,
        )
    try:
        mcfg = ModelConfig(**cfg)
        mcfg.validate()
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"CPC_audio args give an invalid model: {e}") from None
    return mcfg


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def convert_state(model_sd: dict[str, Tensor], crit_sd: dict[str, Tensor] | None,
                  cfg: ModelConfig, src: str = "checkpoint") -> tuple[dict[str, Tensor], bool]:
    """CPC_audio state dicts -> the state dict of ``build_model(cfg)``, and whether the
    prediction heads came from the checkpoint (else they are the fresh model's).

    Raises:
        DataError: a tensor whose shape disagrees with the args, a tensor the model has
            no place for, or one the model needs and the checkpoint lacks.
    """
    state = _StateBuilder(build_model(cfg).state_dict(), src)
    _put_model_tensors(state, model_sd, cfg)
    heads = False
    if cfg.predictor.startswith("relpos_") and crit_sd is not None:
        _put_head_tensors(state, crit_sd, cfg)
        heads = True
    _fill_missing(state, heads)
    return state.out, heads


class _StateBuilder:
    """The converted state dict ``out``, filled tensor by tensor with the shapes and
    dtypes of ``target`` (the state dict of the model the args describe); ``src`` names
    the checkpoint in messages."""

    def __init__(self, target: dict[str, Tensor], src: str) -> None:
        self.target = target
        self.src = src
        self.out: dict[str, Tensor] = {}

    def put(self, dst: str, src_key: str, value: Tensor) -> None:
        """Store the checkpoint tensor ``src_key`` as ``out[dst]``, reshaped to the
        target's shape (CPC_audio's ``(1, C, 1)`` channel-norm parameters to ``(C,)``)."""
        src, target = self.src, self.target
        if dst not in target:
            raise DataError(f"{src}: tensor {src_key} {_shape(value)} has no place in the "
                            "model its args describe (an architecture the importer does "
                            "not know?)")
        want = tuple(target[dst].shape)
        # CPC_audio's channel norm keeps its affine parameters as (1, C, 1)
        as_channels = value.dim() == 3 and value.shape[0] == value.shape[2] == 1 \
            and (value.shape[1],) == want
        if _shape(value) != want and not as_channels:
            raise DataError(f"{src}: tensor {src_key} has shape {_shape(value)}, but the "
                            f"args describe {want}")
        self.out[dst] = value.detach().to(target[dst].dtype).reshape(want).clone()


def _put_model_tensors(state: _StateBuilder, model_sd: dict[str, Tensor],
                       cfg: ModelConfig) -> None:
    """The encoder (``gEncoder``) and context network (``gAR``) tensors; context layers
    above ``cfg.context_layers`` are dropped."""
    n_layers = len(cfg.layers())
    for key, value in model_sd.items():
        m = re.fullmatch(r"gEncoder\.conv(\d+)\.(weight|bias)", key)
        if m and int(m[1]) < n_layers:
            state.put(f"encoder.convs.{m[1]}.{m[2]}", key, value)
            continue
        m = re.fullmatch(r"gEncoder\.batchNorm(\d+)\.(\w+)", key)
        if m and int(m[1]) < n_layers:
            sub = m[2]
            if cfg.encoder_norm == "channel_unbiased" and sub in ("weight", "bias"):
                state.put(f"encoder.norms.{m[1]}.{sub}", key, value)
                continue
            if cfg.encoder_norm == "batch":
                state.put(f"encoder.norms.{m[1]}.{sub}", key, value)
                continue
        m = re.fullmatch(r"gAR\.baseNet\.((?:weight|bias)_(?:ih|hh)_l(\d+))", key)
        if m:
            if int(m[2]) >= cfg.context_layers:  # --ar-level: layers above K dropped
                continue
            state.put(f"context.rnn.{m[1]}", key, value)
            continue
        raise DataError(f"{state.src}: unexpected tensor {key} {_shape(value)} in gEncoder (an "
                        "architecture the importer does not know)")


def _put_head_tensors(state: _StateBuilder, crit_sd: dict[str, Tensor],
                      cfg: ModelConfig) -> None:
    """The transformer prediction heads (``cpcCriterion``): one shared layer or one per
    step; the attention buffers are checked against ``cfg.predictor_window``, not copied."""
    src = state.src
    shared = cfg.predictor.endswith("_shared")
    for key, value in crit_sd.items():
        if shared:
            m = re.fullmatch(r"wPrediction\.predictor\.0\.(.+)", key)
            prefix, rest = ("heads.layer.", m[1]) if m else ("", "")
        else:
            m = re.fullmatch(r"wPrediction\.predictors\.(\d+)\.0\.(.+)", key)
            prefix, rest = (f"heads.layers.{m[1]}.", m[2]) if m else ("", "")
        if m and rest in _HEAD_BUFFERS:
            if rest.endswith("mask") and value.shape[-1] != cfg.predictor_window:
                raise DataError(f"{src}: tensor {key} has shape {_shape(value)}, but the "
                                f"args describe a window of {cfg.predictor_window} frames")
            continue
        if not m or rest not in _HEAD_KEYS:
            raise DataError(f"{src}: unexpected tensor {key} {_shape(value)} in "
                            "cpcCriterion (a prediction network the importer does not "
                            "know; --no-heads imports without it)")
        state.put(prefix + _HEAD_KEYS[rest], key, value)


def _fill_missing(state: _StateBuilder, heads: bool) -> None:
    """Without imported ``heads``, take the fresh model's heads; any other tensor the
    model needs and the checkpoint lacked is an error naming its CPC_audio key."""
    for dst, value in state.target.items():
        if dst in state.out:
            continue
        if dst.startswith("heads.") and not heads:
            state.out[dst] = value.clone()
            continue
        if dst.startswith("heads."):
            name = f"cpcCriterion lacks the tensor for {dst}"
        else:
            name = "gEncoder lacks " + re.sub(r"^encoder\.convs\.", "gEncoder.conv", re.sub(
                r"^encoder\.norms\.", "gEncoder.batchNorm", dst.replace("context.rnn.",
                                                                          "gAR.baseNet.")))
        raise DataError(f"{state.src}: {name} {tuple(value.shape)}, which its args describe")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_cpc_audio(ckpt: str | Path, out: str | Path, args_path: str | Path | None = None,
                     heads: bool = True, ar_level: int | None = None, seed: int = 0
                     ) -> dict[str, Any]:
    """Convert a CPC_audio checkpoint into a cpc_seq ``audio_cpc`` checkpoint at ``out``.

    Fresh heads (``heads=False``, or ``ar_level`` below the checkpoint's depth) are drawn
    from ``seed``. Returns the ``imported`` record stored in the checkpoint. Nothing is
    written unless every check passes.

    Raises:
        DataError: unreadable, truncated or non-CPC_audio file, missing args file, shapes
            that disagree with the args.
        ConfigError: an architecture option cpc_seq has no counterpart for.
    """
    from cpc_seq.audio.train import ExperimentConfig
    from cpc_seq.io.checkpoint import save_checkpoint

    ckpt, out = Path(ckpt), Path(out)
    if out.resolve() == ckpt.resolve():
        raise DataError(f"{out}: the output would overwrite the checkpoint being imported")
    args, model_sd, crit_sd = read_cpc_audio(ckpt, args_path)
    levels = _int_arg(args, "nLevelsGRU")
    keep_heads = heads and (ar_level is None or ar_level == levels)
    if heads and crit_sd is None:
        keep_heads = False  # the torch.hub file carries no prediction network
    mcfg = model_config_from_args(args, heads=heads, ar_level=ar_level)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state, heads_in = convert_state(model_sd, crit_sd if keep_heads else None, mcfg,
                                        src=str(ckpt))
    window = max(_int_arg(args, "sizeWindow"), (mcfg.n_steps + 1) * DOWNSAMPLING)
    exp = from_dict(ExperimentConfig, {
        "model": to_dict(mcfg), "data": {"window": window},
        "loss": {"negatives": "cross_batch", "n_negatives": _int_arg(args, "negativeSamplingExt")},
    })
    record = {
        "from": "cpc_audio", "checkpoint": str(ckpt), "sha256": _sha256(ckpt),
        "heads": "imported" if heads_in else "fresh", "ar_level": mcfg.context_layers,
        "args": {k: args.get(k) for k in ARG_DEFAULTS},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"kind": "audio_cpc", "config": to_dict(exp), "model": state, "step": 0,
                     "imported": record}, out)
    return record


def register(sub: Any) -> None:
    """Add ``import-checkpoint`` to a ``add_subparsers()`` object."""
    p = sub.add_parser(
        "import-checkpoint", help="convert a CPC_audio checkpoint into a cpc_seq one",
        description="Convert a published CPC model (CPC_audio training checkpoint with its "
        "checkpoint_args.json, or the torch.hub file) into a cpc_seq checkpoint for "
        "extract, probes, ABX, the s3prl upstream and train --init-from. Loads with "
        "weights_only (no code in the file runs).")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES,
                   help="the toolkit that wrote CHECKPOINT")
    p.add_argument("--args", help="CPC_audio args JSON (default: checkpoint_args.json beside "
                   "CHECKPOINT; a torch.hub file carries its own)")
    p.add_argument("--ar-level", type=int, default=None,
                   help="keep only the first K LSTM layers, so c is layer K's output (the "
                   "ZeroSpeech 2021 scripts' --gru_level; their CPC-big uses 2); the "
                   "prediction heads are then fresh")
    p.add_argument("--no-heads", action="store_true",
                   help="do not import the prediction network: fresh linear heads (for a "
                   "prediction network cpc_seq has no counterpart for)")
    p.add_argument("--seed", type=int, default=0, help="seed of fresh heads")
    p.add_argument("checkpoint", help="CPC_audio .pt file")
    p.add_argument("out", help="cpc_seq checkpoint to write")
    p.set_defaults(func=cmd_import)


def cmd_import(args: Any) -> int:
    """``cpc-seq audio import-checkpoint``: prints one JSON line describing the import."""
    rec = import_cpc_audio(args.checkpoint, args.out, args_path=args.args,
                           heads=not args.no_heads, ar_level=args.ar_level, seed=args.seed)
    print(json.dumps({"out": str(args.out), "heads": rec["heads"],
                      "ar_level": rec["ar_level"]}))
    return 0

"""Text probes (tuned TF-IDF bag of words, tuned logistic regression, majority class), the
sentence encoders of the sentence-level model, and the fortunes task builder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cpc_seq.cli import main as text_main
from cpc_seq.errors import ConfigError
from cpc_seq.text.models import SentenceCPC, SentenceEncoder, TextModelConfig
from cpc_seq.text.probe import (
    dev_split,
    logreg_probe,
    majority_result,
    markdown_table,
    tfidf_probe,
)

ROOT = Path(__file__).resolve().parents[2]

# Two "authors": which class a line is from is given by its words, never by its length.
A = ["the sea and the ship", "a ship on the sea", "the sailor sings of the sea",
     "wind fills the sail", "the ship sails at dawn", "salt and sea and sail"]
B = ["the field and the plough", "a plough in the field", "the farmer sings of the field",
     "rain falls on the corn", "the corn grows at dawn", "soil and corn and field"]


def _texts(n: int) -> tuple[list[str], np.ndarray]:
    texts = [(A if i % 2 == 0 else B)[(i // 2) % 6] for i in range(n)]
    return texts, np.array([i % 2 for i in range(n)])


def test_dev_split_is_stratified_and_disjoint() -> None:
    y = np.array([0] * 50 + [1] * 30 + [2] * 2)
    fit, dev = dev_split(y, 0.2, seed=0)
    assert not set(fit) & set(dev) and sorted([*fit, *dev]) == list(range(len(y)))
    assert [int((y[dev] == c).sum()) for c in range(3)] == [10, 6, 1]
    again = dev_split(y, 0.2, seed=0)
    assert np.array_equal(again[1], dev)
    with pytest.raises(ConfigError):
        dev_split(y, 1.5, seed=0)


def test_tfidf_probe_learns_words_and_reports_the_chosen_c() -> None:
    tr, ytr = _texts(60)
    te, yte = _texts(20)
    d = tfidf_probe(tr, ytr, te, yte, ["sea", "land"], c_grid=[0.001, 10.0])
    assert d["accuracy"] == 1.0 and d["probe"] == "logreg"
    assert set(d["dev_accuracy_by_C"]) == {"0.001", "10"} and d["C"] in (0.001, 10.0)
    assert d["feature_dim"] > 20  # unigrams + bigrams
    uni = tfidf_probe(tr, ytr, te, yte, ["sea", "land"], ngrams=1, c_grid=[10.0])
    assert uni["feature_dim"] < d["feature_dim"]
    # with labels that do not follow the words the probe cannot beat chance by much
    shuffled = np.random.default_rng(0).permutation(ytr)
    bad = tfidf_probe(tr, shuffled, te, yte, ["sea", "land"], c_grid=[10.0])
    assert bad["accuracy"] < 0.9


def test_logreg_probe_picks_c_on_dev_and_majority() -> None:
    g = np.random.default_rng(0)
    y = g.integers(0, 3, 400)
    x = g.normal(size=(400, 10)) + 3.0 * np.eye(3, 10)[y]
    d = logreg_probe(torch.tensor(x[:300]), torch.tensor(y[:300]), x[300:], y[300:],
                     ["a", "b", "c"], c_grid=[1e-4, 1.0])
    assert d["accuracy"] > 0.9 and d["C"] == 1.0
    assert d["dev_accuracy_by_C"]["0.0001"] <= d["dev_accuracy_by_C"]["1"]
    m = majority_result(np.array([0, 1, 1, 2]), np.array([1, 1, 0, 2]), ["a", "b", "c"])
    assert m["accuracy"] == 0.5 and m["majority_class"] == "b"
    table = markdown_table([d | {"name": "feat"}, m | {"name": "majority class"}])
    assert table.count("majority class") == 1 and "| feat | 10 |" in table


def _write_set(d: Path, texts: list[str], y: np.ndarray) -> None:
    d.mkdir(parents=True)
    (d / "text").write_text("".join(f"i{k:03d} {t}\n" for k, t in enumerate(texts)))
    (d / "utt2label").write_text("".join(f"i{k:03d} {'ab'[v]}\n" for k, v in enumerate(y)))


def test_text_probe_cli_bow_majority_and_concatenated_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tr, ytr = _texts(40)
    te, yte = _texts(10)
    _write_set(tmp_path / "tr", tr, ytr)
    _write_set(tmp_path / "te", te, yte)
    lab = ["--train-labels", str(tmp_path / "tr" / "utt2label"),
           "--test-labels", str(tmp_path / "te" / "utt2label")]
    assert text_main(["text", "probe", "--bow", "--train-text", str(tmp_path / "tr" / "text"),
                      "--test-text", f"text:{tmp_path / 'te' / 'text'}", *lab,
                      "--out", str(tmp_path / "bow")]) == 0
    assert "C=" in capsys.readouterr().out
    assert json.loads((tmp_path / "bow" / "result.json").read_text())["accuracy"] == 1.0
    assert text_main(["text", "probe", "--majority", *lab, "--out", str(tmp_path / "maj")]) == 0
    assert json.loads((tmp_path / "maj" / "result.json").read_text())["probe"] == "majority"
    # two feature sets (npy dirs) are concatenated per item: 3 + 2 dims
    g = np.random.default_rng(0)
    for name, dim in (("f1", 3), ("f2", 2)):
        for split, y in (("tr", ytr), ("te", yte)):
            d = tmp_path / f"{name}_{split}"
            d.mkdir()
            for k, v in enumerate(y):
                np.save(d / f"i{k:03d}.npy", (g.normal(size=(1, dim)) + 4 * v).astype(np.float32))
    assert text_main(["text", "probe", "--train-feats", f"npy:{tmp_path / 'f1_tr'}",
                      "--test-feats", f"npy:{tmp_path / 'f1_te'}",
                      "--train-feats", f"npy:{tmp_path / 'f2_tr'}",
                      "--test-feats", f"npy:{tmp_path / 'f2_te'}", *lab,
                      "--C-grid", "1", "--out", str(tmp_path / "cat")]) == 0
    r = json.loads((tmp_path / "cat" / "result.json").read_text())
    assert r["feature_dim"] == 5 and r["accuracy"] == 1.0
    # bad input: one line, exit 2
    assert text_main(["text", "probe", "--bow", *lab, "--out", str(tmp_path / "x")]) == 2
    assert "--bow needs --train-text" in capsys.readouterr().err
    assert text_main(["text", "probe", "--majority", *lab, "--C-grid", "a,b",
                      "--out", str(tmp_path / "x")]) == 2
    assert "--C-grid" in capsys.readouterr().err


def test_text_probe_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        text_main(["text", "probe", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: logreg)" in out and "(default: 0.1)" in out and "1000)" in out


_ENCODERS = [("gru", {"sentence_dim": 12}, 12), ("transformer", {"sentence_dim": 10}, 10),
             ("bag", {}, 8), ("conv", {}, 6)]


@pytest.mark.parametrize("kind,extra,dim,pool", [
    *[(k, e, d, pool) for k, e, d in _ENCODERS for pool in ("mean", "max")],
    ("bag", {}, 8, "weighted"),  # weighted pooling is the bag encoder's only
])
def test_sentence_encoders_batch_invariant(kind: str, extra: dict, dim: int, pool: str) -> None:
    torch.manual_seed(0)
    cfg = TextModelConfig(level="sentence", vocab_size=30, embed_dim=8, sentence_encoder=kind,
                          encoder_layers=[[3, 1, 6]], pool=pool, dim_c=8, n_steps=1, **extra)
    cfg.validate()
    enc = SentenceEncoder(cfg).eval()
    if pool == "weighted":
        torch.nn.init.normal_(enc.token_score.weight)  # not the plain mean of the init
    lengths = torch.tensor([4, 1, 7, 0])
    toks = torch.randint(1, 30, (4, 7)) * (torch.arange(7) < lengths[:, None])
    z = enc(toks, lengths)
    assert z.shape == (4, dim) and torch.all(z[3] == 0)
    for i in range(3):
        alone = enc(toks[i : i + 1, : int(lengths[i])], lengths[i : i + 1])
        torch.testing.assert_close(alone[0], z[i], atol=1e-5, rtol=1e-5)
    # the full model trains end to end: gradients reach the token embeddings
    model = SentenceCPC(cfg)
    out = model(toks.view(1, 4, 7), lengths.view(1, 4), torch.tensor([3]))
    (model.predict(out.c).sum() + out.z.sum()).backward()
    emb = model.encoder.conv.embed if kind == "conv" else model.encoder.embed
    assert emb.weight.grad is not None and emb.weight.grad.abs().sum() > 0


def test_sentence_encoder_config_errors() -> None:
    with pytest.raises(ConfigError, match="model.sentence_encoder"):
        TextModelConfig(level="sentence", sentence_encoder="lstm").validate()
    with pytest.raises(ConfigError, match="model.sentence_dim"):
        TextModelConfig(level="sentence", sentence_encoder="bag", embed_dim=8,
                        sentence_dim=16).validate()
    with pytest.raises(ConfigError, match="model.sentence_dim"):
        TextModelConfig(level="sentence", sentence_encoder="gru", sentence_dim=7).validate()
    with pytest.raises(ConfigError, match="model.sentence_heads"):
        TextModelConfig(level="sentence", sentence_encoder="transformer", embed_dim=10,
                        sentence_heads=4).validate()


def test_weighted_bag_pooling() -> None:
    torch.manual_seed(0)
    cfg = TextModelConfig(level="sentence", vocab_size=40, embed_dim=8, sentence_encoder="bag",
                          pool="weighted", dim_c=8, n_steps=1)
    cfg.validate()
    enc = SentenceEncoder(cfg).eval()
    lengths = torch.tensor([5, 1, 3])
    toks = torch.randint(1, 40, (3, 5)) * (torch.arange(5) < lengths[:, None])
    mean = TextModelConfig(**{**cfg.__dict__, "pool": "mean"})
    plain = SentenceEncoder(mean).eval()
    plain.embed.weight.data.copy_(enc.embed.weight.data)
    torch.testing.assert_close(enc(toks, lengths), plain(toks, lengths))  # scores 0 = mean
    # a large score on one token makes the sentence vector that token's embedding
    enc.token_score.weight.data[int(toks[0, 2])] = 50.0
    torch.testing.assert_close(enc(toks, lengths)[0], enc.embed.weight[toks[0, 2]])
    enc(toks, lengths).sum().backward()
    assert enc.token_score.weight.grad is not None and enc.token_score.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="model.pool"):
        TextModelConfig(level="sentence", sentence_encoder="conv", pool="weighted").validate()


def test_bag_token_dropout_only_while_training() -> None:
    torch.manual_seed(0)
    cfg = TextModelConfig(level="sentence", vocab_size=40, embed_dim=8, sentence_encoder="bag",
                          pool="mean", dim_c=8, n_steps=1, token_dropout=0.5)
    cfg.validate()
    enc = SentenceEncoder(cfg)
    lengths = torch.tensor([12, 1, 5, 0])
    toks = torch.randint(1, 40, (4, 12)) * (torch.arange(12) < lengths[:, None])
    ref = enc.eval()(toks, lengths)
    enc.train()
    runs = torch.stack([enc(toks, lengths) for _ in range(20)])  # (20, 4, 8)
    # a one-token sentence keeps its token; an empty one stays zero; evaluation is exact
    torch.testing.assert_close(runs[:, 1], ref[1].expand(20, -1))
    assert torch.all(runs[:, 3] == 0)
    torch.testing.assert_close(enc.eval()(toks, lengths), ref)
    # longer sentences see a different subset of their tokens from draw to draw
    assert (runs[:, 0] - ref[0]).abs().sum(dim=1).gt(1e-6).sum() >= 18
    assert len({tuple(r.tolist()) for r in runs[:, 2].round(decimals=5)}) > 5
    # the mean of a kept subset: never outside the range of the sentence's embeddings
    emb = enc.embed.weight[toks[0]]
    assert torch.all(runs[:, 0] <= emb.max(dim=0).values + 1e-6)
    assert torch.all(runs[:, 0] >= emb.min(dim=0).values - 1e-6)
    with pytest.raises(ConfigError, match="model.token_dropout"):
        TextModelConfig(level="sentence", sentence_encoder="conv", token_dropout=0.1).validate()
    with pytest.raises(ConfigError, match="model.token_dropout"):
        TextModelConfig(level="sentence", sentence_encoder="bag", token_dropout=1.0).validate()


def test_bag_embed_init_std() -> None:
    def words(std: float) -> torch.Tensor:
        torch.manual_seed(0)
        cfg = TextModelConfig(level="sentence", vocab_size=500, embed_dim=64,
                              sentence_encoder="bag", pool="weighted", embed_init_std=std)
        cfg.validate()
        return SentenceEncoder(cfg).embed.weight.detach()

    default, small = words(1.0), words(0.1)
    assert abs(float(default[1:].std()) - 1.0) < 0.02  # torch's N(0, 1), as before
    assert abs(float(small[1:].std()) - 0.1) < 0.002
    assert torch.all(small[0] == 0)  # the padding row stays 0
    # the same draw, scaled: a probe on standardised features sees the same random z
    torch.testing.assert_close(small[1:], 0.1 * default[1:])
    with pytest.raises(ConfigError, match="model.embed_init_std"):
        TextModelConfig(level="sentence", sentence_encoder="bag", embed_init_std=0.0).validate()
    with pytest.raises(ConfigError, match="model.embed_init_std"):
        TextModelConfig(level="sentence", sentence_encoder="conv", embed_init_std=0.1).validate()


def test_make_fortunes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    body = "\n%\n".join(f"Fortune {i} of\n  alpha.\t -- Someone" for i in range(12))
    (src / "alpha").write_text(body + "\n%\nShared one.\n")
    (src / "beta").write_text("\n%\n".join(f"B_\bo_\bl_\bd {i} beta" for i in range(12))
                              + "\n%\nShared one.\n")
    (src / "tiny").write_text("only\n%\ntwo\n")
    (src / "art").write_text("\n%\n".join("x" * 3 for _ in range(20)))
    (src / "alpha.dat").write_bytes(b"\0\1")
    (src / "alpha.u8").symlink_to(src / "alpha")
    (src / "gamma.fortunes-pre").write_text("\n%\n".join(f"pre {i}" for i in range(12)))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "recipes/text/local/make_fortunes.py"),
                          "--src", str(src), "--min-fortunes", "10", "--out", str(out)],
                         capture_output=True, text=True, check=True)
    assert "2 collections, 24 fortunes" in run.stderr and "2 duplicates dropped" in run.stderr
    train = (out / "corpus" / "train" / "alpha.txt").read_text().splitlines()
    assert train[0] == "Fortune 0 of alpha. -- Someone" and len(train) == 10  # 12 minus i = 4, 9
    assert (out / "corpus" / "test" / "beta.txt").read_text() == "Bold 9 beta\n"
    labels = (out / "probe_test" / "utt2label").read_text().split()
    assert labels == ["alpha-00009", "alpha", "beta-00009", "beta"]
    assert len((out / "probe_train" / "text").read_text().splitlines()) == 20
    bad = subprocess.run([sys.executable, str(ROOT / "recipes/text/local/make_fortunes.py"),
                          "--src", str(tmp_path / "none"), "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "apt-get install -y fortunes" in bad.stderr
    capped = tmp_path / "capped"
    run = subprocess.run([sys.executable, str(ROOT / "recipes/text/local/make_fortunes.py"),
                          "--src", str(src), "--min-fortunes", "10", "--max-fortunes", "10",
                          "--out", str(capped)], capture_output=True, text=True, check=True)
    # the first 10 of each file: "Shared one." (the 13th) is no longer kept
    assert "2 collections, 20 fortunes" in run.stderr and "0 duplicates" in run.stderr
    assert (capped / "corpus" / "train" / "alpha.txt").read_text().splitlines()[-1] == (
        "Fortune 8 of alpha. -- Someone")
    assert (capped / "corpus" / "dev" / "beta.txt").read_text() == "Bold 4 beta\n"
    # the Spanish package's layout: <name>.fortunes, with its .dat index and .u8 link
    (src / "gamma.fortunes").write_text("\n%\n".join(f"Gamma {i}" for i in range(12)))
    (src / "gamma.fortunes.dat").write_bytes(b"\0\1")
    (src / "gamma.fortunes.u8").symlink_to(src / "gamma.fortunes")
    es = tmp_path / "es"
    run = subprocess.run([sys.executable, str(ROOT / "recipes/text/local/make_fortunes.py"),
                          "--src", str(src), "--min-fortunes", "10", "--out", str(es)],
                         capture_output=True, text=True, check=True)
    assert "3 collections, 36 fortunes" in run.stderr and "gamma 12" in run.stderr
    assert (es / "corpus" / "test" / "gamma.txt").read_text() == "Gamma 9\n"
    # --collections: only the named ones, whatever else the folder holds
    named = tmp_path / "named"
    run = subprocess.run([sys.executable, str(ROOT / "recipes/text/local/make_fortunes.py"),
                          "--src", str(src), "--min-fortunes", "10", "--collections",
                          "gamma,alpha", "--out", str(named)],
                         capture_output=True, text=True, check=True)
    # without beta, "Shared one." is no longer in two files, so alpha keeps it
    assert "2 collections, 25 fortunes" in run.stderr and "0 duplicates" in run.stderr
    assert sorted(x.name for x in (named / "corpus" / "train").iterdir()) == [
        "alpha.txt", "gamma.txt"]
    bad = subprocess.run([sys.executable, str(ROOT / "recipes/text/local/make_fortunes.py"),
                          "--src", str(src), "--collections", "alpha,zeta", "--out",
                          str(tmp_path / "z")], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        f"error: {src}: no collection zeta (--collections)"]


def test_bow_item_without_text_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tr, ytr = _texts(10)
    _write_set(tmp_path / "tr", tr, ytr)
    (tmp_path / "short").write_text("i000 only one\n")
    rc = text_main(["text", "probe", "--bow", "--train-text", str(tmp_path / "short"),
                    "--test-text", str(tmp_path / "tr" / "text"),
                    "--train-labels", str(tmp_path / "tr" / "utt2label"),
                    "--test-labels", str(tmp_path / "tr" / "utt2label"),
                    "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "'i001' has a label but no text" in err and "\n" not in err


def test_sentencepiece_subword_sampling_varies_and_decodes() -> None:
    from cpc_seq.text.tokenizers import SentencePieceTokenizer

    lines = (A + B) * 30
    tok = SentencePieceTokenizer.train(lines, vocab_size=30)
    text = "the sailor sings of the field"
    fixed = tok.encode_batch([text])[0]
    samples = {tuple(s) for s in tok.encode_sampled([text] * 50, alpha=0.1)}
    assert len(samples) > 1 and all(tok.decode(list(s)) == text for s in samples)
    assert tok.encode_batch([text])[0] == fixed
    with pytest.raises(ConfigError):
        tok.encode_sampled([text], alpha=0.0)


def test_seed_table_rows_over_seeds(tmp_path: Path) -> None:
    """recipes/text/local/seed_table.py: accuracies per seed, mean, spread, the training
    figures of trained runs, the z+c layer, and one line for a missing result."""
    def run_dir(name: str, accs: dict[str, float], trained: bool) -> Path:
        d = tmp_path / name
        for layer, acc in accs.items():
            (d / f"probe_{layer}").mkdir(parents=True)
            (d / f"probe_{layer}" / "result.json").write_text(json.dumps({"accuracy": acc}))
        if trained:
            (d / "cpc").mkdir()
            (d / "cpc" / "log.jsonl").write_text('{"step": 10}\n{"step": 20}\n')
            (d / "final.json").write_text('[train] a note\n{"train/acc": 0.5, "dev/acc": 0.01}\n')
            (d / "time.txt").write_text("\tUser time (seconds): 90.5\n\tSystem time (seconds): 9.5\n")
        return d

    a = run_dir("cpc_s0", {"z": 0.50, "zc": 0.52}, True)
    b = run_dir("cpc_s1", {"z": 0.54}, True)
    (tmp_path / "bow.json").write_text(json.dumps({"accuracy": 0.6}))
    script = str(ROOT / "recipes/text/local/seed_table.py")
    out = subprocess.run([sys.executable, script, f"CPC z={a},{b}", f"CPC z+c={a}:zc",
                          f"bow={tmp_path / 'bow.json'}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()
    assert rows[2] == "| CPC z | 50.0, 54.0 | 52.0 | 4.0 | 100, 100 | 20, 20 | 50.0, 50.0 | 1.00, 1.00 |"
    assert rows[3].startswith("| CPC z+c | 52.0 | 52.0 | 0.0 | 100 |")
    assert rows[4] == "| bow | 60.0 | 60.0 | 0.0 |  |  |  |  |"
    bad = subprocess.run([sys.executable, script, f"CPC c={a}:c"], capture_output=True, text=True)
    assert bad.returncode != 0 and "probe_c/result.json: no probe result" in bad.stderr


def _play(*speeches: tuple[str, str]) -> str:
    body = "\n\n".join(f"{who}.\n{text}" for who, text in speeches)
    return "Title page\n\nACT I.\n\nScene I. A room.\n\n[Enter both.]\n\n" + body + "\n"


def test_make_shakespeare_play_and_character_labels(tmp_path: Path) -> None:
    texts = tmp_path / "texts"
    texts.mkdir()
    # 10 speeches per play: speech i % 10 == 4 is dev, 9 is test, the rest train
    (texts / "alpha_gut.txt").write_text(_play(*[
        ("Sir Toby" if i % 2 else "Ham", f"Speech {i} of alpha. [Aside.] Second {i}.")
        for i in range(10)]))
    (texts / "beta_gut.txt").write_text(_play(*[("BETA", f"Line {i} of beta.")
                                                for i in range(10)]))
    (texts / "sonnets_gut.txt").write_text("ACT I.\n\nPOET.\nNot a play.\n")
    script = str(ROOT / "recipes/text/local/make_shakespeare.py")
    plays, chars = tmp_path / "plays", tmp_path / "chars"
    run = subprocess.run([sys.executable, script, "--texts", str(texts), "--out", str(plays)],
                         capture_output=True, text=True, check=True)
    assert "2 plays; probe train 24 / test 3 sentences" in run.stderr
    assert (plays / "corpus" / "test" / "alpha.txt").read_text() == (
        "Speech 9 of alpha. Second 9.\n")
    assert (plays / "probe_test" / "utt2label").read_text().split() == [
        "alpha-00000", "alpha", "alpha-00001", "alpha", "beta-00000", "beta"]
    run = subprocess.run([sys.executable, script, "--texts", str(texts), "--out", str(chars),
                          "--labels", "character", "--characters", "2"],
                         capture_output=True, text=True, check=True)
    # alpha's two tagged speakers have 8 training sentences each, beta's 8: ties by name
    assert "2 characters, training sentences 8-8" in run.stderr
    for split in ("train", "dev", "test"):  # the same training text for both tasks
        for play in ("alpha", "beta"):
            assert ((chars / "corpus" / split / f"{play}.txt").read_text()
                    == (plays / "corpus" / split / f"{play}.txt").read_text())
    labels = (chars / "probe_test" / "utt2label").read_text().split()
    assert labels == ["alpha-00000", "alpha:Sir_Toby", "alpha-00001", "alpha:Sir_Toby"]
    (texts / "gamma_gut.txt").write_text("no acts here\n")
    bad = subprocess.run([sys.executable, script, "--texts", str(texts), "--out", str(plays)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == f"error: {texts / 'gamma_gut.txt'}: no first-act heading " \
        "('ACT I', 'Act 1', 'ACT FIRST')"

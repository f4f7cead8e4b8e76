"""Text CPC: models, tokenisers, corpus reading, sentence splitting, training, extraction."""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from cpc_seq.cli import main as text_main
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.io.checkpoint import load_checkpoint
from cpc_seq.losses import kstep_infonce
from cpc_seq.text.data import (
    ReadNotes,
    SentenceStore,
    decode_utf8,
    keep_long_enough,
    read_corpus,
    read_text_file,
    read_text_items,
    sample_positions,
    split_sentences,
)
from cpc_seq.text.extract import extract_text_to, load_text
from cpc_seq.text.models import SentenceCPC, TextModelConfig, TokenCPC, build_text_model
from cpc_seq.text.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    SentencePieceTokenizer,
    encode_many,
    tokenizer_from_state,
)
from cpc_seq.text.train import load_text_config, make_text_engine

ROOT = Path(__file__).resolve().parents[2]
KJV_DEV = ROOT / "data" / "text" / "kjv" / "dev"

torch.set_num_threads(1)


def _token_cfg(context: str = "gru", **kw: object) -> TextModelConfig:
    base = dict(level="token", vocab_size=257, embed_dim=8, encoder_layers=[[2, 2, 16], [2, 2, 16]],
                context=context, dim_c=16, n_steps=3, transformer_heads=2)
    base.update(kw)
    return TextModelConfig(**base)  # type: ignore[arg-type]


def _sent_cfg(context: str = "gru", **kw: object) -> TextModelConfig:
    base = dict(level="sentence", vocab_size=50, embed_dim=8, encoder_layers=[[3, 1, 16]],
                context=context, dim_c=16, n_steps=2, transformer_heads=2)
    base.update(kw)
    return TextModelConfig(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- models


def test_token_model_shapes_and_padding() -> None:
    torch.manual_seed(0)
    model = build_text_model(_token_cfg()).eval()
    assert isinstance(model, TokenCPC) and model.downsample_rate == 4
    x = torch.randint(1, 257, (2, 37))
    lengths = torch.tensor([37, 20])
    x[1, 20:] = 0
    out = model(x, lengths)
    assert out.z.shape == (2, 10, 16) and out.c.shape == (2, 10, 16)
    assert out.lengths.tolist() == [10, 5]  # ceil(N / 4)
    assert model.predict(out.c).shape == (2, 10, 3, 16)
    alone = model(x[1:, :20])
    torch.testing.assert_close(out.z[1, :5], alone.z[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.c[1, :5], alone.c[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("context", ["gru", "transformer"])
@pytest.mark.parametrize("layers", [[[2, 2, 16], [2, 2, 16]], [[6, 2, 16], [3, 2, 16]]])
def test_token_context_is_causal(context: str, layers: list[list[int]]) -> None:
    torch.manual_seed(0)
    model = build_text_model(_token_cfg(context, encoder_layers=layers)).eval()
    x = torch.randint(1, 257, (1, 40))
    base = model(x)
    for t in (0, 3, 7):
        y = x.clone()
        y[0, 4 * (t + 1) :] = torch.randint(1, 257, (40 - 4 * (t + 1),))
        out = model(y)
        # c_t and z_t depend on tokens < 4 (t + 1) only ...
        torch.testing.assert_close(out.c[0, : t + 1], base.c[0, : t + 1])
        torch.testing.assert_close(out.z[0, : t + 1], base.z[0, : t + 1])
        # ... and the changed tokens do change the next frame.
        assert not torch.allclose(out.z[0, t + 1], base.z[0, t + 1])


@pytest.mark.parametrize("context", ["gru", "transformer"])
def test_sentence_model_shapes_and_causality(context: str) -> None:
    torch.manual_seed(0)
    model = build_text_model(_sent_cfg(context)).eval()
    assert isinstance(model, SentenceCPC)
    toks = torch.randint(1, 50, (2, 5, 7))
    tl = torch.tensor([[7, 3, 5, 1, 7], [2, 7, 4, 0, 0]])
    toks = toks * (torch.arange(7) < tl.unsqueeze(-1))
    n_sent = torch.tensor([5, 3])
    out = model(toks, tl, n_sent)
    assert out.z.shape == (2, 5, 16) and out.c.shape == (2, 5, 16)
    assert out.lengths.tolist() == [5, 3]
    assert torch.all(out.z[1, 3:] == 0)
    assert model.predict(out.c).shape == (2, 5, 2, 16)
    # z of a sentence is its own embedding, whatever the padding width or its neighbours
    emb = model.embed(toks[0, 1:2, :3], tl[0, 1:2])
    torch.testing.assert_close(out.z[0, 1], emb[0], atol=1e-5, rtol=1e-5)
    # c_s depends only on sentences <= s
    changed = toks.clone()
    changed[0, 3:] = torch.randint(1, 50, (2, 7))
    out2 = model(changed, torch.tensor([[7, 3, 5, 7, 7], [2, 7, 4, 0, 0]]), n_sent)
    torch.testing.assert_close(out2.c[0, :3], out.c[0, :3])
    assert not torch.allclose(out2.c[0, 3], out.c[0, 3])


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_sentence_pooling_ignores_padding(pool: str) -> None:
    torch.manual_seed(0)
    model = build_text_model(_sent_cfg(pool=pool)).eval()
    toks = torch.randint(1, 50, (1, 6))
    a = model.embed(toks, torch.tensor([6]))
    padded = torch.cat([toks, torch.zeros(1, 9, dtype=torch.long)], 1)
    b = model.embed(padded, torch.tensor([6]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _fit(model: torch.nn.Module, batch_fn, steps: int = 60) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        out = model(*batch_fn())
        loss = kstep_infonce(model.predict(out.c), out.z, out.lengths).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return sum(losses[:5]) / 5, sum(losses[-5:]) / 5


def test_token_loss_decreases_on_predictable_sequence() -> None:
    torch.manual_seed(0)
    model = build_text_model(_token_cfg(vocab_size=20, n_steps=2))
    g = torch.Generator().manual_seed(1)

    def batch() -> tuple[torch.Tensor]:
        start = torch.randint(0, 19, (8, 1), generator=g)
        return ((start + torch.arange(32)) % 19 + 1,)  # counting modulo 19

    first, last = _fit(model, batch)
    assert last < 0.6 * first, (first, last)


def test_sentence_loss_decreases_on_predictable_sequence() -> None:
    torch.manual_seed(0)
    model = build_text_model(_sent_cfg(vocab_size=20))
    g = torch.Generator().manual_seed(1)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        start = torch.randint(0, 19, (8, 1), generator=g)
        ids = (start + torch.arange(10)) % 19 + 1  # sentence j is token (start+j) repeated
        toks = ids.unsqueeze(-1).expand(8, 10, 4).clone()
        return toks, torch.full((8, 10), 4)

    first, last = _fit(model, batch)
    assert last < 0.6 * first, (first, last)


def test_model_config_validation() -> None:
    from cpc_seq.config import from_dict

    with pytest.raises(ConfigError, match="model.encoder_layers"):
        from_dict(TextModelConfig, {"encoder_layers": [[1, 2, 8]]}, prefix="model.")
    with pytest.raises(ConfigError, match="model.level"):
        from_dict(TextModelConfig, {"level": "word"}, prefix="model.")


# --------------------------------------------------------------------- tokenisers


def test_byte_tokenizer_round_trip() -> None:
    tok = ByteTokenizer()
    text = "Héllo, wörld ✓ — ok"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8")) and min(ids) >= 1 and max(ids) < 257
    assert tok.decode(ids) == text
    assert tok.decode([0, *ids, 0]) == text  # padding is dropped
    assert tok.decode([0xC3 + 1]) == "\ufffd"  # a lone lead byte
    assert isinstance(tokenizer_from_state(tok.state()), ByteTokenizer)


def test_char_tokenizer() -> None:
    tok = CharTokenizer.train(["abca", "bc"], max_chars=2)
    assert tok.chars == ["a", "b"] and tok.vocab_size == 4
    assert tok.encode("abz") == [2, 3, 1]
    assert tok.decode(tok.encode("ab")) == "ab"
    again = tokenizer_from_state(tok.state())
    assert again.encode("abz") == [2, 3, 1]


def test_sentencepiece_train_encode_decode_and_state(tmp_path: Path) -> None:
    docs = read_corpus(KJV_DEV)
    sents = [s for d in docs[:10] for s in d.sentences]
    tok = SentencePieceTokenizer.train(sents, vocab_size=300)
    assert tok.vocab_size == 300
    s = sents[3]
    ids = tok.encode(s)
    assert ids and 0 not in ids and tok.decode(ids) == s
    state = tok.state()
    assert state["model_proto"].dtype == torch.uint8
    torch.save({"tokenizer": state}, tmp_path / "t.pt")
    back = tokenizer_from_state(torch.load(tmp_path / "t.pt", weights_only=True)["tokenizer"])
    assert back.encode(s) == ids
    tok.save_model(tmp_path / "tok.model")
    assert (tmp_path / "tok.model").read_bytes() == tok.model_proto
    with pytest.raises(ConfigError, match="vocab_size"):
        SentencePieceTokenizer.train(["a b c"], vocab_size=5000)


# --------------------------------------------------------------------- data


def test_empty_files_and_lines(tmp_path: Path) -> None:
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_text("First line.\n\n   \nSecond line.\n")
    (d / "b.txt").write_text("")
    (d / "c.txt").write_text("  \n\n")
    notes = ReadNotes()
    docs = read_corpus(d, layout="lines", notes=notes)
    assert [doc.name for doc in docs] == ["a"]
    assert docs[0].sentences == ["First line.", "Second line."]
    assert notes.empty_lines == 4 and notes.first_empty_line  # 2 in a.txt, 2 in c.txt == f"{d / 'a.txt'}:2"
    assert len(notes.empty_files) == 2
    assert any("skipped 2 empty file(s)" in line for line in notes.summary())
    with pytest.raises(DataError, match=r"a\.txt:2: empty line"):
        read_corpus(d, layout="lines", empty_lines="error")
    with pytest.raises(DataError, match=r"b\.txt: empty file"):
        read_corpus(d, layout="lines", empty_files="error")
    with pytest.raises(DataError, match="no text"):
        read_corpus([str(d / "b.txt"), str(d / "c.txt")])
    with pytest.raises(DataError, match="no such file"):
        read_corpus(tmp_path / "missing")


def test_invalid_utf8_error_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\nbad \xff here\n")
    with pytest.raises(DataError, match=r"bad\.txt: invalid UTF-8 at byte offset 14 \(line 2"):
        read_text_file(path)
    with pytest.raises(DataError, match="byte offset 14"):
        read_corpus(tmp_path)
    notes = ReadNotes()
    text = read_text_file(path, errors="replace", notes=notes)
    assert text == "good line\nbad \ufffd here\n"
    assert notes.replaced == {str(path): 1} and notes.first_replaced[str(path)] == 14
    assert "replaced 1 invalid UTF-8" in notes.summary()[0]


def test_bom_and_crlf() -> None:
    assert decode_utf8(b"\xef\xbb\xbfone\r\ntwo\rthree") == "one\ntwo\nthree"
    with pytest.raises(DataError, match="byte offset 4"):  # offsets count the BOM
        decode_utf8(b"\xef\xbb\xbfa\xc3(")


def test_sentence_splitter() -> None:
    assert split_sentences("Yes. He went home! Did he?  Maybe...") == [
        "Yes.", "He went home!", "Did he?", "Maybe..."]
    assert split_sentences("Mr. Smith met Dr. Who, e.g. at St. Paul's. J. R. R. Tolkien wrote.") == [
        "Mr. Smith met Dr. Who, e.g. at St. Paul's.", "J. R. R. Tolkien wrote."]
    assert split_sentences("Where art thou? and he said, I heard.") == [
        "Where art thou? and he said, I heard."]
    assert split_sentences('He said, "Go." Then 3.5 men left.\nNew line without stop\n\n') == [
        'He said, "Go."', "Then 3.5 men left.", "New line without stop"]
    assert split_sentences("  \n ") == []


def test_short_documents_and_text_items(tmp_path: Path) -> None:
    notes = ReadNotes()
    keep = keep_long_enough(["a", "b", "c"], [10, 3, 8], 5, "skip", "tokens", notes)
    assert keep == [0, 2] and notes.short_documents == ["b"]
    with pytest.raises(DataError, match="document b: 3 tokens, shorter than the training window of 5"):
        keep_long_enough(["a", "b"], [10, 3], 5, "error", "tokens")
    with pytest.raises(DataError, match="no document has at least 50"):
        keep_long_enough(["a"], [10], 50, "skip", "tokens")
    f = tmp_path / "text"
    f.write_text("u1 hello there\n\nu2 bye\n")
    assert read_text_items(f) == [("u1", "hello there"), ("u2", "bye")]
    f.write_text("u1 hello\nu2\n")
    with pytest.raises(DataError, match=r"text:2: expected"):
        read_text_items(f)


def test_sentence_store_gather() -> None:
    store = SentenceStore(["d0", "d1"], [[[5, 6], [7]], [[1, 2, 3], [4], [9, 9]]])
    toks, tl = store.gather(torch.tensor([1, 0]), torch.tensor([1, 0]), 2)
    assert tl.tolist() == [[1, 2], [2, 1]]
    assert toks.shape == (2, 2, 2)
    assert toks[0].tolist() == [[4, 0], [9, 9]] and toks[1].tolist() == [[5, 6], [7, 0]]


def test_sentence_store_picks_a_segmentation_variant() -> None:
    best = [[[5, 6], [7]], [[1, 2, 3], [4], [9, 9]]]
    other = [[[5, 8, 6], [7]], [[1, 23], [4, 4], [9]]]
    store = SentenceStore(["d0", "d1"], best, [other])
    assert store.n_variants == 2 and store.total_sentences == 5
    toks, tl = store.gather(torch.tensor([1]), torch.tensor([0]), 3, torch.tensor([[1, 0, 1]]))
    assert tl.tolist() == [[2, 1, 1]]
    assert toks[0].tolist() == [[1, 23], [4, 0], [9, 0]]
    same = store.gather(torch.tensor([1]), torch.tensor([0]), 3)
    assert same[0][0].tolist() == [[1, 2, 3], [4, 0, 0], [9, 9, 0]]
    with pytest.raises(ValueError, match="4 sentences, expected 5"):
        SentenceStore(["d0", "d1"], best, [other[:1] + [[[1], [2]]]])


def test_sample_positions_are_distinct_in_range_and_cover_the_document() -> None:
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([4, 7, 30])
    seen = torch.zeros(3, 30, dtype=torch.long)
    for _ in range(200):
        p = sample_positions(lengths, 4, g)
        assert p.shape == (3, 4) and p.dtype == torch.int64
        for row, n in zip(p, lengths.tolist()):
            assert len(set(row.tolist())) == 4 and 0 <= int(row.min()) and int(row.max()) < n
        seen.scatter_add_(1, p, torch.ones_like(p))
    assert (seen[0, :4] == 200).all()  # a 4-sentence document: all of it, in some order
    assert (seen[1, :7] > 60).all() and (seen[2, :30] > 0).all() and seen[1, 7:].sum() == 0
    again = sample_positions(lengths, 4, torch.Generator().manual_seed(3))
    assert torch.equal(again, sample_positions(lengths, 4, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="3 sentences, fewer than 4"):
        sample_positions(torch.tensor([3, 9]), 4, g)


def test_sentence_store_gathers_given_positions() -> None:
    store = SentenceStore(["d0", "d1"], [[[5, 6], [7]], [[1, 2, 3], [4], [9, 9]]])
    toks, tl = store.gather(torch.tensor([1, 0]), torch.tensor([0, 0]), 2,
                            positions=torch.tensor([[2, 0], [1, 0]]))
    assert tl.tolist() == [[2, 3], [1, 2]]
    assert toks[0].tolist() == [[9, 9, 0], [1, 2, 3]]
    assert toks[1].tolist() == [[7, 0, 0], [5, 6, 0]]


# ------------------------------------------------------------- training and extraction

SMALL = [
    f"data.train={KJV_DEV}", "data.batch_size=4", "model.embed_dim=8", "model.dim_c=16",
    "train.steps=4", "train.log_every=2", "train.save_every=2", "train.progress=false",
    "train.threads=1", "optim.warmup_steps=2",
]
TOKEN = [*SMALL, "model.level=token", "model.encoder_layers=[[2,2,16],[2,2,16]]",
         "model.n_steps=3", "data.window=32", "data.short_documents=skip"]
SENT = [*SMALL, "model.level=sentence", "model.encoder_layers=[[3,1,16]]", "model.n_steps=2",
        "data.window=4", "data.max_sentence_tokens=24", "tokenizer.kind=sentencepiece",
        "tokenizer.vocab_size=300", "tokenizer.train_sentences=400"]


def _assert_resume_is_exact(tmp_path: Path, overrides: list[str]) -> None:
    """6 steps straight through (``tmp_path/a``) and 3 steps + a resume to 6
    (``tmp_path/b``) end with identical weights."""
    full = make_text_engine(load_text_config(None, [*overrides, "train.steps=6",
                                                f"train.out_dir={tmp_path / 'a'}"]))
    full.run()
    make_text_engine(load_text_config(None, [*overrides, "train.steps=3",
                                         f"train.out_dir={tmp_path / 'b'}"])).run()
    resumed = make_text_engine(load_text_config(None, [*overrides, "train.steps=6",
                                                   f"train.out_dir={tmp_path / 'b'}"]),
                               resume=True)
    assert resumed.step == 3
    resumed.run()
    for (name, p1), p2 in zip(full.model.state_dict().items(),
                              resumed.model.state_dict().values()):
        assert torch.equal(p1, p2), name


def test_token_training_resumes_exactly(tmp_path: Path) -> None:
    _assert_resume_is_exact(tmp_path, TOKEN)
    st = load_checkpoint(tmp_path / "a" / "last.pt")
    assert st["kind"] == "text_token" and st["tokenizer"] == {"kind": "bytes"}
    assert st["config"]["model"]["vocab_size"] == 257
    lines = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6] and "speed/tokens_per_sec" in lines[0]


def test_subword_regularisation_samples_seeded_segmentations_and_resumes(tmp_path: Path
                                                                         ) -> None:
    from cpc_seq.text.data import ReadNotes
    from cpc_seq.text.train import build_store

    sub = [*SENT, "data.subword_samples=3", "data.subword_alpha=0.2"]
    cfg = load_text_config(None, [*sub, f"train.out_dir={tmp_path / 'c'}"])
    tok = make_text_engine(cfg).task.tokenizer
    docs = read_corpus(KJV_DEV)
    stores = [build_store(docs, tok, "sentence", cfg.data, "skip", ReadNotes(), sample_seed=5)
              for _ in range(2)]
    a, b = (s.sent_store for s in stores)
    assert stores[0].n_variants == 4 and torch.equal(a.data, b.data)  # seeded: reproducible
    n = stores[0].n_sentences
    best = [a.sequence(i).tolist() for i in range(n)]
    sampled = [a.sequence(n + i).tolist() for i in range(n)]
    assert best == [s[:24] for s in encode_many(tok, [x for d in docs for x in d.sentences])]
    assert sum(x != y for x, y in zip(best, sampled)) > n // 4  # most segmentations differ
    whole = [(x, y) for x, y in zip(best, sampled) if max(len(x), len(y)) < 24][:50]
    assert len(whole) == 50 and all(tok.decode(x) == tok.decode(y) for x, y in whole)
    _assert_resume_is_exact(tmp_path, sub)  # the segmentation draws continue
    with pytest.raises(ConfigError, match="data.subword_samples.*sentencepiece"):
        load_text_config(None, [*sub, "tokenizer.kind=bytes"])


def test_shuffled_sentence_order_draws_seeded_windows_and_resumes(tmp_path: Path) -> None:
    shuf = [*SENT, "data.sentence_order=shuffled"]
    task = make_text_engine(load_text_config(None, [*shuf, f"train.out_dir={tmp_path / 'c'}"])
                            ).task
    store = task.train_store
    idx, off = task.batches.sampler.epoch_plan(0)
    idx, off = idx[0], off[0]
    g = torch.Generator()
    g.set_state(task.order_gen.get_state())
    (toks, tl), _ = task._gather(store, idx, off, sampled=True)
    pos = sample_positions(store.lengths[idx], 4, g)
    want_toks, want_tl = store.gather(idx, off, 4, positions=pos)
    assert torch.equal(toks, want_toks) and torch.equal(tl, want_tl)
    assert not (pos.diff(dim=1) == 1).all()  # not the file's consecutive sentences
    (dev_toks, _), _ = task._gather(store, idx, off)  # dev and extraction: the file's order
    assert torch.equal(dev_toks, store.gather(idx, off, 4)[0])
    _assert_resume_is_exact(tmp_path, shuf)  # the window draws continue (rng_order)
    with pytest.raises(ConfigError, match="data.sentence_order.*level=sentence"):
        load_text_config(None, [*TOKEN, "data.sentence_order=shuffled"])


def test_sentence_training_checkpoint_and_extraction(tmp_path: Path) -> None:
    out = tmp_path / "sent"
    make_text_engine(load_text_config(None, [*SENT, f"train.out_dir={out}",
                                        f"data.dev={KJV_DEV}", "train.eval_every=4",
                                        "train.eval_windows=8"])).run()
    st = torch.load(out / "last.pt", weights_only=True)  # plain data only
    assert st["kind"] == "text_sentence"
    proto = st["tokenizer"]["model_proto"]
    assert proto.dtype == torch.uint8
    assert (out / "tokenizer.model").read_bytes() == proto.numpy().tobytes()
    assert (out / "best.pt").is_file()

    up = load_text(out / "last.pt")
    texts = ["In the beginning God created the heaven. And the earth was void.", "Amen."]
    res = up.extract_features(texts)
    z, c = res["hidden_states"]
    assert res["lengths"].tolist() == [2, 1] and z.shape == (2, 2, 16) and c.shape == (2, 2, 16)
    assert torch.all(z[1, 1] == 0) and torch.all(c[1, 1] == 0)
    alone = up.extract_features(texts[1:])
    torch.testing.assert_close(alone["hidden_states"][1][0, 0], c[1, 0], atol=1e-5, rtol=1e-5)
    assert up.embed(texts, layer="z", pool="mean").shape == (2, 16)
    with pytest.raises(DataError, match="empty"):
        up.extract_features(["  "])

    # command line: extraction to ark/scp (per sentence, pooled) and npy, then a probe
    items = tmp_path / "text"
    labels = tmp_path / "utt2label"
    sents = [s for d in read_corpus(KJV_DEV)[:4] for s in d.sentences[:12]]
    items.write_text("".join(f"s{i:03d} {s}\n" for i, s in enumerate(sents)))
    labels.write_text("".join(f"s{i:03d} {'ab'[i % 2]}\n" for i in range(len(sents))))
    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    assert text_main(["text", "extract", "--ckpt", str(out / "last.pt"), "--layer", "z",
                      "--pool", "mean", "--no-progress", f"text:{items}",
                      f"ark,scp:{ark},{scp}"]) == 0
    feats = kaldiio.load_scp(str(scp))
    assert len(feats) == len(sents) and feats["s000"].shape == (1, 16)
    # --skip-existing: a second run adds only the new items; old entries stay valid
    more = [*read_text_items(items), ("extra", "And God saw the light.")]
    written = extract_text_to(up, more, f"ark,scp:{ark},{scp}", layer="z", pool="mean",
                              skip_existing=True, progress=False)
    assert list(written) == ["extra"]
    again = kaldiio.load_scp(str(scp))
    assert len(again) == len(sents) + 1
    np.testing.assert_array_equal(again["s000"], feats["s000"])
    assert text_main(["text", "extract", "--ckpt", str(out / "last.pt"), "--random-init",
                      "--unit", "document", "--no-progress", str(KJV_DEV / "01-genesis.txt"),
                      f"npy:{tmp_path / 'npy'}"]) == 0
    doc = np.load(tmp_path / "npy" / "01-genesis.npy")
    assert doc.shape == (len(read_corpus(KJV_DEV / "01-genesis.txt")[0].sentences), 16)
    for args in (["--train-feats", f"scp:{scp}", "--test-feats", f"scp:{scp}"],
                 ["--bow", "--train-text", str(items), "--test-text", f"text:{items}"]):
        name = "bow" if "--bow" in args else "cpc"
        assert text_main(["text", "probe", *args, "--train-labels", str(labels), "--test-labels",
                          str(labels), "--epochs", "2", "--out", str(tmp_path / name)]) == 0
        r = json.loads((tmp_path / name / "result.json").read_text())
        assert r["n"] == len(sents) and 0.0 <= r["accuracy"] <= 1.0
    assert text_main(["table", str(tmp_path / "cpc" / "result.json"),
                      str(tmp_path / "bow" / "result.json")]) == 0


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = text_main(["text", "train", *TOKEN, "train.bogus=1"])
    assert rc == 2 and capsys.readouterr().err.strip().startswith(
        "error: unknown config key train.bogus")
    rc = text_main(["text", "train", *TOKEN, "data.window=8"])
    assert rc == 2 and "too few for 3 prediction steps" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.txt").write_bytes(b"ok\n\xc3(\n")
    rc = text_main(["text", "train", *TOKEN, f"data.train={bad}", f"train.out_dir={tmp_path}/o"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "x.txt: invalid UTF-8 at byte offset 3" in err and "\n" not in err

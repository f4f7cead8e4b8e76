"""TextGrid phone tiers to frame labels (cpc_seq.audio.data.textgrid), on files written here."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("praatio")

from cpc_seq.audio.cli.labels import register_labels_from_textgrid as register  # noqa: E402
from cpc_seq.audio.data.kaldi import read_frame_labels, read_phone_table  # noqa: E402
from cpc_seq.audio.data.textgrid import (  # noqa: E402
    find_textgrids,
    intervals_to_frames,
    read_phone_tier,
    textgrid_frame_labels,
)
from cpc_seq.errors import ConfigError, DataError  # noqa: E402


def write_textgrid(path, xmax, tiers, encoding="utf-8"):
    """tiers: {name: [(start, end, label), ...]} written in Praat's long text format,
    intervals in the given order (MFA writes every interval, silence as "")."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
             "xmin = 0", f"xmax = {xmax}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for k, (name, ivs) in enumerate(tiers.items(), start=1):
        lines += [f"    item [{k}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {xmax}",
                  f"        intervals: size = {len(ivs)}"]
        for j, (s, e, lab) in enumerate(ivs, start=1):
            lines += [f"        intervals [{j}]:", f"            xmin = {s}",
                      f"            xmax = {e}", f'            text = "{lab}"']
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


MFA = {
    "words": [(0, 0.05, ""), (0.05, 0.1, "hi"), (0.1, 0.12, "")],
    "phones": [(0, 0.05, ""), (0.05, 0.075, "HH"), (0.075, 0.1, "AY1"), (0.1, 0.12, "")],
}


def test_frame_centres_and_mfa_silence(tmp_path):
    # 0.12 s = 1920 samples = 12 frames; centres at 0.005, 0.015, ..., 0.115.
    # HH [0.05, 0.075): centres 0.055, 0.065 -> frames 5, 6; 0.075 is the centre of
    # frame 7, which goes to the interval starting there (AY1).
    tg = write_textgrid(tmp_path / "u1.TextGrid", 0.12, MFA)
    labels = textgrid_frame_labels(tg)
    assert labels == ["SIL"] * 5 + ["HH", "HH"] + ["AY1"] * 3 + ["SIL"] * 2
    assert textgrid_frame_labels(tg, strip_stress=True)[7] == "AY"
    assert textgrid_frame_labels(tg, gap_label="sil", mapping={"HH": "H"})[:7] == \
        ["sil"] * 5 + ["H", "H"]
    # the words tier is also readable
    assert textgrid_frame_labels(tg, tier="words")[5:10] == ["hi"] * 5


def test_gaps_are_filled_or_refused(tmp_path):
    # a tier with a real gap (no interval from 0.02 to 0.06) and praatio-style files
    # that leave silence out entirely
    tg = write_textgrid(tmp_path / "g.TextGrid", 0.08,
                        {"phones": [(0, 0.02, "a"), (0.06, 0.08, "b")]})
    assert textgrid_frame_labels(tg, gap_label="<unk>") == ["a", "a"] + ["<unk>"] * 4 + ["b", "b"]
    with pytest.raises(DataError, match=r"g\.TextGrid: tier 'phones': no interval covers frame 2 "
                                        r"\(centre 0\.025 s\)"):
        textgrid_frame_labels(tg, gap_label=None)


def test_overlapping_intervals_name_file_tier_and_intervals(tmp_path):
    tg = write_textgrid(tmp_path / "ov.TextGrid", 0.3,
                        {"words": [(0, 0.3, "w")],
                         "phones": [(0, 0.1, "AH0"), (0.08, 0.2, "B"), (0.2, 0.3, "C")]})
    with pytest.raises(DataError) as info:
        read_phone_tier(tg)
    msg = str(info.value)
    assert str(tg) in msg and "tier 'phones'" in msg
    assert "[0.08, 0.2] 'B' overlaps interval [0, 0.1] 'AH0'" in msg
    with pytest.raises(DataError, match="overlaps"):
        intervals_to_frames([(0, 0.1, "a"), (0.05, 0.2, "b")], 20)


def test_tier_choice_and_bad_files(tmp_path):
    tg = write_textgrid(tmp_path / "s.TextGrid", 0.05,
                        {"spk1 - words": [(0, 0.05, "x")], "spk1 - phones": [(0, 0.05, "X")]})
    assert textgrid_frame_labels(tg) == ["X"] * 5  # the one tier ending with 'phones'
    with pytest.raises(DataError, match=r"no tier 'segments' \(tiers: 'spk1 - words', "):
        textgrid_frame_labels(tg, tier="segments")
    bad = tmp_path / "bad.TextGrid"
    bad.write_text("this is not a TextGrid\n")
    with pytest.raises(DataError, match=r"bad\.TextGrid: cannot parse TextGrid"):
        read_phone_tier(bad)
    with pytest.raises(DataError, match="cannot read"):
        read_phone_tier(tmp_path / "missing.TextGrid")
    # UTF-16, as Praat writes by default for non-ASCII labels
    u16 = write_textgrid(tmp_path / "w.TextGrid", 0.02, {"phones": [(0, 0.02, "ʃ")]},
                         encoding="utf-16")
    assert textgrid_frame_labels(u16) == ["ʃ", "ʃ"]


def test_find_textgrids(tmp_path):
    (tmp_path / "a" / "spk").mkdir(parents=True)
    write_textgrid(tmp_path / "a" / "spk" / "u2.TextGrid", 0.02, {"phones": [(0, 0.02, "a")]})
    write_textgrid(tmp_path / "a" / "u1.textgrid", 0.02, {"phones": [(0, 0.02, "a")]})
    found = find_textgrids([tmp_path / "a"])
    assert list(found) == ["u1", "u2"]
    write_textgrid(tmp_path / "u1.TextGrid", 0.02, {"phones": [(0, 0.02, "a")]})
    with pytest.raises(DataError, match="utterance id 'u1' also from"):
        find_textgrids([tmp_path / "a", tmp_path / "u1.TextGrid"])
    with pytest.raises(DataError, match="no such file"):
        find_textgrids([tmp_path / "zzz"])


def _command(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["labels-from-textgrid", *argv])
    return args.func(args), parser


def test_command_writes_labels_the_probes_read(tmp_path, capsys):
    d = tmp_path / "align"
    d.mkdir()
    write_textgrid(d / "spk-b.TextGrid", 0.12, MFA)
    write_textgrid(d / "spk-a.TextGrid", 0.04, {"phones": [(0, 0.02, "sil"), (0.02, 0.04, "K")]})
    out, phones = tmp_path / "phone_frames.txt", tmp_path / "phones.txt"
    rc, parser = _command([str(d), "--out", str(out), "--phones-out", str(phones),
                           "--map", "sil=SIL", "--strip-stress"])
    assert rc == 0
    assert "2 utterances, 16 frames, 4 labels" in capsys.readouterr().out
    assert out.read_text().splitlines() == [
        "spk-a SIL SIL K K", "spk-b " + " ".join(["SIL"] * 5 + ["HH"] * 2 + ["AY"] * 3 + ["SIL"] * 2)]
    table = read_phone_table(phones)
    assert table == {"AY": 0, "HH": 1, "K": 2, "SIL": 3}
    assert read_frame_labels(out, table)["spk-a"].tolist() == [3, 3, 2, 2]
    help_text = " ".join(parser._subparsers._group_actions[0].choices["labels-from-textgrid"]
                         .format_help().split())
    assert "(default: SIL)" in help_text and "(default: phones)" in help_text
    with pytest.raises(ConfigError, match="--map"):
        _command([str(d), "--out", str(out), "--map", "nonsense"])

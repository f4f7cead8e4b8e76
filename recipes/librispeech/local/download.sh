#!/usr/bin/env bash
# Download LibriSpeech train-clean-100 (openslr.org/12, CC BY 4.0) and the CPC paper's
# phone alignments and splits (linked from the CPC_audio README).
# Usage: local/download.sh DEST   -> DEST/LibriSpeech/train-clean-100, DEST/alignments/
set -euo pipefail
dest=${1:?usage: download.sh DEST}
mkdir -p "$dest/alignments"
url=https://www.openslr.org/resources/12/train-clean-100.tar.gz
if [ ! -d "$dest/LibriSpeech/train-clean-100" ]; then
  echo "downloading $url (6.3 GB)" >&2
  curl -fL --retry 3 -C - -o "$dest/train-clean-100.tar.gz.part" "$url"
  mv "$dest/train-clean-100.tar.gz.part" "$dest/train-clean-100.tar.gz"
  tar -C "$dest" -xzf "$dest/train-clean-100.tar.gz"
fi
# The alignments live in a Google Drive folder (CPC_audio README, "LibriSpeech 100h"
# phone labels): https://drive.google.com/drive/folders/1BhJ2umKH3whguxMwifaKtSra0TgAbtfb
# It holds converted_aligned_phones.txt, train_split.txt and test_split.txt.
need="converted_aligned_phones.txt train_split.txt test_split.txt"
missing=0
for f in $need; do [ -s "$dest/alignments/$f" ] || missing=1; done
if [ $missing = 1 ]; then
  if python -c "import gdown" 2>/dev/null; then
    python -m gdown --folder "https://drive.google.com/drive/folders/1BhJ2umKH3whguxMwifaKtSra0TgAbtfb" -O "$dest/alignments"
  else
    echo "error: put $need into $dest/alignments (from the Google Drive folder above;" \
         "or 'pip install gdown' and rerun this stage)" >&2
    exit 2
  fi
fi

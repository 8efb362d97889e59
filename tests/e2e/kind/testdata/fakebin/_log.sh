# Sourced by the fake tools: append "<tool> <args...>" to $FAKE_LOG, one line per call
# (newlines inside arguments become spaces; one write, so piped fakes do not interleave).
# shellcheck shell=bash
fake_log() {
  [[ -n "${FAKE_LOG:-}" ]] || return 0
  local line="$*"
  line=${line//$'\n'/ }
  printf '%s\n' "$line" >>"$FAKE_LOG"
}

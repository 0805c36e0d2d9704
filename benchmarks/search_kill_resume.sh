#!/usr/bin/env bash
# A search killed with SIGKILL part-way, then resumed: what the README's Search section measured.
#
#     benchmarks/search_kill_resume.sh [CONFIG] [KILL_AFTER]
#
# Runs `compress search CONFIG` (default pipelines/mobile-search.yaml) into runs/<name>/ from an
# empty run folder, polls its study (RUN_DIR/search/study.db, SQLite) until KILL_AFTER trials
# (default 21) are complete or stopped, kills the search and its children with SIGKILL, then
# runs `compress search CONFIG --resume`. Prints the trial states at the kill and the wall time of
# each half. Logs: RUN_DIR/../<name>-first.log and -resume.log. Needs the sqlite3 command.
# Empty ~/.cache/compress first for a from-scratch figure (the teacher is cached there).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-pipelines/mobile-search.yaml}
kill_after=${2:-21}
py=.venv/bin/python
name=$($py -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$config")
run=runs/$name
db=$run/search/study.db
rm -rf "$run"
start=$(date +%s)
.venv/bin/compress search "$config" > "runs/$name-first.log" 2>&1 &
pid=$!
finished=0
while kill -0 "$pid" 2>/dev/null; do
  sleep 2
  finished=$(sqlite3 "$db" "select count(*) from trials where state in ('COMPLETE', 'PRUNED')" \
             2>/dev/null || echo 0)
  if [ "${finished:-0}" -ge "$kill_after" ]; then
    echo "at the kill: $(sqlite3 "$db" "select state || ' ' || count(*) from trials group by state" | paste -sd, -)"
    pkill -KILL -P "$pid" || true
    kill -KILL "$pid"
    break
  fi
done
wait "$pid" 2>/dev/null || true
mid=$(date +%s)
if [ "${finished:-0}" -lt "$kill_after" ]; then
  echo "the search ended with $finished finished trials, before $kill_after: nothing to resume" >&2
  exit 1
fi
.venv/bin/compress search "$config" --resume > "runs/$name-resume.log" 2>&1
end=$(date +%s)
grep -m1 "trials finished already" "runs/$name-resume.log" || true
tail -n 2 "runs/$name-resume.log"
echo "killed after $((mid - start)) s; resume $((end - mid)) s; total $((end - start)) s"

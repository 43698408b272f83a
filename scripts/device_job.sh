#!/usr/bin/env bash
# One long GPU job over several device calls. A call's processes are killed when it returns, except one started
# in a new session (setsid), which runs on while the machine is held; and the machine is given back 30 s after a
# call unless the next call comes. So: start the job in the first call, then, in every next call (sent at once,
# prepared beforehand), wait for it at most one call's length and bring back what it has written so far. Nothing
# is cut at a call's end, as `timeout -s INT` would cut it. Do not count on the second call: on 2026-12-04 one sent at
# once found the machine taken back, and the job was lost (ts-self, docs/speed.md). Bring back what a call has at
# its end, and plan work that means something when only the first call runs.
#
#   scripts/device_job.sh start NAME COMMAND [ARGS...]   # returns once the job runs on its own: its output in
#                                                        # $JOBS/NAME.log, its exit code in $JOBS/NAME.rc at the end
#   scripts/device_job.sh wait NAME SECONDS              # until the job ends or SECONDS pass; prints the log's
#                                                        # last lines; exits with the job's code, or 3 if it runs on
#
# JOBS defaults to /root/ck/jobs: outside the copied tree, it lasts as long as the machine (not a fresh one).
# Example, two calls of one warm machine:
#   scripts/device_job.sh start ls python study.py --dataset=lengthtask --study_dir=/root/ck/ls --jobs=6
#   scripts/device_job.sh wait ls 560; python study.py ... --stage=report --collect=$OUT
set -uo pipefail
JOBS=${JOBS:-/root/ck/jobs}
usage() { echo "usage: scripts/device_job.sh start NAME COMMAND [ARGS...] | wait NAME SECONDS" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1 name=$2
shift 2
log=$JOBS/$name.log rc=$JOBS/$name.rc pid=$JOBS/$name.pid

case $action in
  start)
    [ $# -ge 1 ] || usage
    mkdir -p "$JOBS"
    if [ -e "$log" ] && [ ! -e "$rc" ]; then echo "error: job $name is running already ($log)" >&2; exit 2; fi
    rm -f "$rc" "$pid"
    # setsid: a new session, so that the end of this call does not end the job. The job writes its pid first (it
    # is in its own session from then on: wait for that before returning) and its exit code last.
    FILES=$JOBS/$name setsid bash -c 'echo $$ > "$FILES.pid"; "$@"; echo $? > "$FILES.part"; mv "$FILES.part" "$FILES.rc"' \
      "$name" "$@" > "$log" 2>&1 < /dev/null &
    for _ in $(seq 100); do [ -e "$pid" ] && break; sleep 0.1; done
    [ -e "$pid" ] || { echo "error: job $name did not start (see $log)" >&2; exit 1; }
    echo "started $name: $log"
    ;;
  wait)
    [ $# -eq 1 ] && [[ $1 =~ ^[0-9]+$ ]] || usage
    [ -e "$log" ] || { echo "error: no job $name in $JOBS (a fresh machine holds none)" >&2; exit 2; }
    deadline=$(( $(date +%s) + $1 ))
    while [ ! -e "$rc" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 2; done
    tail -n 20 "$log"
    if [ -e "$rc" ]; then
      code=$(cat "$rc")
      echo "job $name ended with exit code $code"
      exit "$code"
    fi
    echo "job $name runs on: wait again in the next call"
    exit 3
    ;;
  *) usage ;;
esac

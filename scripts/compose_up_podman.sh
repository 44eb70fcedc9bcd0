#!/usr/bin/env bash
# Run the compose stack (db + N workers + dashboard) under podman on a host that
# has no Docker engine and cannot pull images, run a tiny study to the end, check
# it, print its trial states and a summary for an issue note, and tear the stack
# down again.
#
#   scripts/compose_up_podman.sh
#   HPO_TRIALS=4 HPO_WORKER_ARGS="--epochs 2 --image-size 32" scripts/compose_up_podman.sh
#
# Settings (environment): HPO_STUDY (demo), HPO_TRIALS (4), HPO_WORKERS (2),
# HPO_WORKER_ARGS (extra `hpo worker` flags, e.g. fewer epochs), HPO_SMOKE_TIMEOUT
# (seconds to wait for the study, 900), HPO_KEEP=1 (leave the stack running),
# HPO_IMAGES_DIR (/var/tmp/hpo-images: rootfs, wheelhouse, logs; never in the repo).
#
# What it does, each step skipped when already done:
#  1. podman: runc runtime and no default ulimits (/etc/containers/containers.conf).
#  2. Base image docker.io/library/debian:bookworm-slim from a debootstrap'd
#     bookworm minbase rootfs (the official image is built the same way), so the
#     Dockerfiles' FROM lines resolve locally.
#  3. Wheelhouse: `pip download` on the host of everything the hpo image
#     installs. Containers here reach apt over HTTP, but HTTPS to PyPI from a
#     container fails (the sandbox intercepts TLS with a CA only the host trusts),
#     so the image build installs from this folder (PIP_INSTALL_OPTS, mounted at
#     /wheels). With open network access the Dockerfile needs none of this.
#  4. podman build of hpo-db:15 and hpo:latest (layer cache makes reruns quick).
#  5. .env from .env.example with a random POSTGRES_PASSWORD if .env is missing.
#  6. The stack as compose project "hpo-smoke" (own volumes: a real deployment's
#     "hpo" project is never touched), db first and healthy, then workers and
#     dashboard; wait for the workers to finish.
#  7. Checks: every worker exited 0 and joined the study; the study has exactly
#     HPO_TRIALS finished trials and none running; the decode cache was built
#     once (one worker "decoded into the cache", the others "cache hit"); every
#     finished trial has its learning-curve artifact in the artifacts volume; the
#     dashboard is published on 127.0.0.1 only and /api/studies lists the study.
#     Then the trial states, the summary (also written to compose-smoke-summary.txt
#     in HPO_IMAGES_DIR) and `down -v`.
#
# podman-compose 1.0.3 differences handled here: it ignores --scale (workers come
# from deploy.replicas), ignores depends_on conditions (we wait for db health
# ourselves), lets .env override the shell environment (the smoke values go into
# a generated override file), and echoes podman commands with the password in
# them (its output goes to a log with the password masked).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

IMAGES_DIR=${HPO_IMAGES_DIR:-/var/tmp/hpo-images}
PROJECT=hpo-smoke
STUDY=${HPO_STUDY:-demo}
TRIALS=${HPO_TRIALS:-4}
WORKERS=${HPO_WORKERS:-2}
WORKER_ARGS=${HPO_WORKER_ARGS:-}
TIMEOUT=${HPO_SMOKE_TIMEOUT:-900}
BASE_IMAGE=docker.io/library/debian:bookworm-slim
HOST_PYTHON=${HOST_PYTHON:-python3}

mkdir -p "$IMAGES_DIR"
LOG="$IMAGES_DIR/compose-smoke.log"
: > "$LOG"
chmod 600 "$LOG"
T0=$SECONDS

step() { printf '\n== [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { echo "FAILED: $*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. podman
step "podman configuration"
command -v podman >/dev/null || die "podman is not installed"
command -v podman-compose >/dev/null || die "podman-compose is not installed (apt-get install podman-compose)"
CONF=/etc/containers/containers.conf
if [ ! -e "$CONF" ]; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$CONF"
    echo "wrote $CONF"
elif ! grep -q '^default_ulimits *= *\[\]' "$CONF" || ! grep -q '^runtime *= *"runc"' "$CONF"; then
    die "$CONF exists but lacks 'default_ulimits = []' under [containers] and 'runtime = \"runc\"' under [engine]; add them"
fi
[ "$(podman info --format '{{.Host.OCIRuntime.Name}}')" = runc ] || die "podman does not use runc"
echo "podman $(podman version --format '{{.Client.Version}}'), runtime runc"

# ---------------------------------------------------------------- 2. base image
step "base image $BASE_IMAGE"
if podman image exists "$BASE_IMAGE"; then
    echo "present"
else
    command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y debootstrap; }
    ROOTFS="$IMAGES_DIR/bookworm-rootfs"
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian > "$IMAGES_DIR/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $IMAGES_DIR/debootstrap.log"
    rm -f "$ROOTFS/etc/apt/sources.list"
    mkdir -p "$ROOTFS/etc/apt/sources.list.d"
    cat > "$ROOTFS/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    chroot "$ROOTFS" apt-get clean
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
    tar -C "$ROOTFS" --numeric-owner -c . | podman import --change 'CMD ["bash"]' - "$BASE_IMAGE"
    rm -rf "$ROOTFS"
fi

# ---------------------------------------------------------------- 3. wheelhouse
step "wheelhouse for the hpo image"
WHEELS="$IMAGES_DIR/wheelhouse"
STAMP=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f "$WHEELS/.stamp" ] && [ "$(cat "$WHEELS/.stamp")" = "$STAMP" ]; then
    echo "up to date ($(ls "$WHEELS" | wc -l) files)"
else
    mkdir -p "$WHEELS"
    "$HOST_PYTHON" -m pip download -q -d "$WHEELS" -c constraints.txt \
        pip setuptools wheel tensorflow . > "$IMAGES_DIR/wheelhouse.log" 2>&1 \
        || die "pip download failed, see $IMAGES_DIR/wheelhouse.log"
    echo "$STAMP" > "$WHEELS/.stamp"
    echo "downloaded ($(ls "$WHEELS" | wc -l) files)"
fi

# ---------------------------------------------------------------- 4. images
step "build hpo-db:15 and hpo:latest"
BUILD0=$SECONDS
podman build -q -t localhost/hpo-db:15 docker/db >> "$LOG" 2>&1 || die "db image build failed, see $LOG"
podman build -q -v "$WHEELS:/wheels:ro" --build-arg PIP_INSTALL_OPTS="--no-index --find-links /wheels" \
    -t localhost/hpo:latest . >> "$LOG" 2>&1 || die "hpo image build failed, see $LOG"
BUILD_S=$((SECONDS - BUILD0))
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'hpo(-db)?:'

# ---------------------------------------------------------------- 5. .env
step ".env"
if [ -f .env ]; then
    echo "using existing .env"
else
    pw=$("$HOST_PYTHON" -c 'import secrets; print(secrets.token_hex(16))')
    sed "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=$pw/" .env.example > .env
    chmod 600 .env
    echo "created .env with a random POSTGRES_PASSWORD"
fi
envval() { sed -n "s/^$1=//p" .env | tail -n1; }
PGUSER_=$(envval POSTGRES_USER)
PGDB_=$(envval POSTGRES_DB)
PW=$(envval POSTGRES_PASSWORD)
PORT=$(envval HPO_DASHBOARD_PORT)
PORT=${PORT:-8080}
[ -n "$PW" ] || die "POSTGRES_PASSWORD is empty in .env"
DATA_HOST=$(envval HPO_DATA_DIR_HOST)
mkdir -p "${DATA_HOST:-./data}"   # podman refuses a bind mount whose source is missing

# ---------------------------------------------------------------- 6. stack
OVERRIDE="$IMAGES_DIR/compose.smoke.yml"
FILES=(-f docker-compose.yml -f "$OVERRIDE")
cat > "$OVERRIDE" <<EOF
services:
  worker:
    command: hpo worker $STUDY --trials $TRIALS $WORKER_ARGS
    deploy:
      replicas: "$WORKERS"
EOF
pc() {  # podman-compose, output to the log with the password masked
    podman-compose -p "$PROJECT" "${FILES[@]}" "$@" 2>&1 | sed -u "s/$PW/****/g" >> "$LOG"
}
worker_names() {
    podman ps -a --filter "label=io.podman.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=worker" --format '{{.Names}}' | sort
}
psql_() { podman exec "${PROJECT}_db_1" psql -U "$PGUSER_" -d "$PGDB_" -tA -F ' ' -c "$1"; }
# A container's log on one line (rich wraps at 80 columns), password masked.
flatlog() { podman logs "$1" 2>&1 | sed "s/$PW/****/g" | tr '\n' ' ' | tr -s ' '; }
STUDY_SQL="from trials t join studies s on s.study_id = t.study_id where s.study_name = '$STUDY'"
DOWN_HINT="podman-compose -p $PROJECT ${FILES[*]} down -v"

step "clean start: down -v of any earlier $PROJECT run"
pc down -v

step "db: up and healthy"
DB0=$SECONDS
pc up -d --no-build db
for i in $(seq 60); do
    podman healthcheck run "${PROJECT}_db_1" >/dev/null 2>&1 && break
    [ "$i" = 60 ] && { podman logs "${PROJECT}_db_1" | tail -20; die "db not healthy after 120s"; }
    sleep 2
done
DB_S=$((SECONDS - DB0))
echo "healthy after ${DB_S}s"

step "workers x$WORKERS and dashboard: up"
pc up -d --no-build
podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}  {{.Status}}'

step "dashboard on 127.0.0.1:$PORT"
for i in $(seq 60); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null && break
    [ "$i" = 60 ] && { podman logs "${PROJECT}_dashboard_1" | tail -20; die "dashboard did not answer"; }
    sleep 2
done
echo "answers: HTTP $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/")"

step "wait for the workers (study '$STUDY', $TRIALS trials, timeout ${TIMEOUT}s)"
WAIT0=$SECONDS
while :; do
    running=0   # (podman 4.3's `ps --format {{.State}}` prints the status text; inspect has the state)
    for c in $(worker_names); do
        [ "$(podman inspect -f '{{.State.Status}}' "$c")" = exited ] || running=$((running + 1))
    done
    counts=$(psql_ "select t.state, count(*) $STUDY_SQL group by t.state order by 1" 2>/dev/null | tr '\n' ' ' || true)
    printf '  %4ds  workers running: %s  trials: %s\n' "$((SECONDS - WAIT0))" "$running" "${counts:-none yet}"
    [ "$running" = 0 ] && break
    [ $((SECONDS - WAIT0)) -ge "$TIMEOUT" ] && die "study not finished after ${TIMEOUT}s; stack left running ($DOWN_HINT)"
    sleep 5
done
WAIT_S=$((SECONDS - WAIT0))

# ---------------------------------------------------------------- 7. checks
fail=0
bad() { echo "  FAIL: $*"; fail=1; }

step "workers: exit codes, study joined, decode cache"
declare -A HOST_OF CACHE_OF EXIT_OF WALL_OF
decoded=0
for c in $(worker_names); do
    log=$(flatlog "$c")
    EXIT_OF[$c]=$(podman inspect -f '{{.State.ExitCode}}' "$c")
    HOST_OF[$c]=$(podman inspect -f '{{.Config.Hostname}}' "$c")
    WALL_OF[$c]=$(( $(podman inspect -f '{{.State.FinishedAt.Unix}}' "$c") - $(podman inspect -f '{{.State.StartedAt.Unix}}' "$c") ))
    case $log in
        *"decoded into the cache"*) CACHE_OF[$c]=built; decoded=$((decoded + 1)) ;;
        *"cache hit"*) CACHE_OF[$c]=hit ;;
        *) CACHE_OF[$c]=none ;;
    esac
    echo "$c (${HOST_OF[$c]}): exit ${EXIT_OF[$c]}, cache ${CACHE_OF[$c]} | $(podman logs "$c" 2>&1 | tail -n1 | sed "s/$PW/****/g")"
    [ "${EXIT_OF[$c]}" = 0 ] || bad "$c exited ${EXIT_OF[$c]}"
    [[ $log == *"joined study '$STUDY' in postgresql+psycopg://"* ]] || bad "$c did not join study '$STUDY' on PostgreSQL"
    [ "${CACHE_OF[$c]}" != none ] || bad "$c logged neither a cache build nor a cache hit"
done
[ "$decoded" = 1 ] || bad "$decoded workers decoded the images into the cache (wanted exactly 1)"

step "trial states"
psql_ "select t.number, t.state, v.value, a.value_json as worker,
              to_char(t.datetime_start, 'HH24:MI:SS') as started,
              round(extract(epoch from t.datetime_complete - t.datetime_start)::numeric, 1) as secs
       from trials t join studies s on s.study_id = t.study_id
       left join trial_values v on v.trial_id = t.trial_id
       left join trial_user_attributes a on a.trial_id = t.trial_id and a.key = 'worker'
       where s.study_name = '$STUDY' order by t.number"
STATES=$(psql_ "select t.state || ' ' || count(*) $STUDY_SQL group by t.state order by 1" | paste -sd, - | sed 's/,/, /g')
finished=$(psql_ "select count(*) $STUDY_SQL and t.state in ('COMPLETE', 'PRUNED')")
unfinished=$(psql_ "select count(*) $STUDY_SQL and t.state in ('RUNNING', 'WAITING')")
[ "$finished" = "$TRIALS" ] || bad "$finished finished trials (wanted exactly $TRIALS)"
[ "$unfinished" = 0 ] || bad "$unfinished trials still RUNNING or WAITING"

step "artifacts, dashboard"
# Learning curves: a trial system attribute per upload, the file in the artifacts volume.
curves=$(psql_ "select count(distinct t.trial_id) $STUDY_SQL and t.state in ('COMPLETE', 'PRUNED')
                and exists (select 1 from trial_system_attributes x where x.trial_id = t.trial_id
                            and x.key like 'artifacts:%' and x.value_json like '%learning-curve-trial-%')")
files=$(podman exec "${PROJECT}_dashboard_1" find /var/lib/hpo/artifacts -type f | wc -l)
echo "finished trials with a learning curve: $curves of $finished; files in the artifacts volume: $files"
[ "$curves" = "$finished" ] && [ "$files" -ge "$curves" ] || bad "learning-curve artifacts missing"
published=$(podman port "${PROJECT}_dashboard_1" | paste -sd' ' -)
echo "dashboard published: $published"
[[ $published == "8080/tcp -> 127.0.0.1:$PORT" ]] || bad "dashboard not published on 127.0.0.1:$PORT only"
api=$(curl -fsS "http://127.0.0.1:$PORT/api/studies" || true)   # (not piped into grep -q: pipefail)
if [[ $api == *"\"study_name\": \"$STUDY\""* ]]; then
    listed=yes; echo "dashboard /api/studies lists study '$STUDY'"
else
    listed=no; bad "dashboard /api/studies does not list study '$STUDY'"
fi

# ---------------------------------------------------------------- summary
step "summary"
SUMMARY="$IMAGES_DIR/compose-smoke-summary.txt"
{
    echo "compose smoke run $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty'), podman $(podman version --format '{{.Client.Version}}'), $(podman-compose version 2>/dev/null | awk '/^podman-compose/ {print "podman-compose " $NF; exit}')"
    echo "study '$STUDY' on PostgreSQL, $WORKERS workers: hpo worker $STUDY --trials $TRIALS $WORKER_ARGS"
    echo "trials: $STATES; finished $finished of $TRIALS, running/waiting $unfinished"
    best=$(psql_ "select t.number, round(v.value::numeric, 3) from trials t join studies s on s.study_id = t.study_id
                  join trial_values v on v.trial_id = t.trial_id
                  where s.study_name = '$STUDY' and t.state = 'COMPLETE' order by v.value desc limit 1")
    [ -n "$best" ] && echo "best: trial ${best% *}, val_acc ${best#* }"
    echo "per worker:"
    for c in $(worker_names); do
        row=$(psql_ "select count(*), coalesce(string_agg('#' || t.number || ' ' || t.state::text, ', ' order by t.number), ''),
                            coalesce(round(sum(extract(epoch from t.datetime_complete - t.datetime_start))::numeric, 1), 0)
                     from trials t join studies s on s.study_id = t.study_id
                     join trial_user_attributes a on a.trial_id = t.trial_id and a.key = 'worker'
                     where s.study_name = '$STUDY' and a.value_json like '\"${HOST_OF[$c]}:%'")
        n=${row%% *}; secs=${row##* }; which=${row#* }; which=${which% *}
        echo "  $c (${HOST_OF[$c]}): $n trials ($which), ${secs}s in trials, ${WALL_OF[$c]}s up, exit ${EXIT_OF[$c]}, cache ${CACHE_OF[$c]}"
    done
    span=$(psql_ "select round(extract(epoch from max(t.datetime_complete) - min(t.datetime_start))::numeric, 1),
                         round(avg(extract(epoch from t.datetime_complete - t.datetime_start))::numeric, 1)
                  $STUDY_SQL and t.state in ('COMPLETE', 'PRUNED')")
    echo "artifacts: learning curves for $curves of $finished finished trials, $files files in ${PROJECT}_hpo-artifacts"
    echo "dashboard: $published, /api/studies lists '$STUDY': $listed"
    echo "timings: image build ${BUILD_S}s, db healthy ${DB_S}s, workers up to exit ${WAIT_S}s (first trial start to last end ${span%% *}s, mean trial ${span##* }s), total $((SECONDS - T0))s"
    echo "result: $([ "$fail" = 0 ] && echo OK || echo FAILED)"
} | tee "$SUMMARY"

if [ "${HPO_KEEP:-0}" = 1 ]; then
    step "HPO_KEEP=1: stack left running ($DOWN_HINT)"
else
    step "down -v"
    pc down -v
fi
[ "$fail" = 0 ] || die "see above; podman-compose output in $LOG"
step "OK in $((SECONDS - T0))s"

# Sourced by the device-machine scripts (gpu_baselines.sh, gpu_frontier.sh, gpu_suite.sh):
# installs the packages the device image lacks from .whl/ (carried; see gpu_baselines.sh),
# puts this checkout's source first on the path, points the data search at .devdata/ and prints
# what the GPU is, and gives time_left (seconds to $deadline). Several scripts may start at once
# in one call: one installs the wheels, the others wait.
if compgen -G ".whl/*.whl" > /dev/null \
    && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  install_wheels() {
    [ -f /tmp/site/.installed ] || { python3 -m pip install -q --no-index --no-deps \
      --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && touch /tmp/site/.installed; }
  }
  if command -v flock > /dev/null; then
    ( flock 9; install_wheels ) 9> /tmp/site.lock
  else install_wheels; fi
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -d .devdata ]; then export RLCOMPRESS_SHARED=${RLCOMPRESS_SHARED:-$PWD/.devdata}; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
# seconds left before $deadline, at least 1 (`timeout 0` would mean no limit at all)
time_left() { local t=$((deadline - $(date +%s))); echo $((t > 1 ? t : 1)); }

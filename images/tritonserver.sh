#!/bin/sh
# `tritonserver` in the citybrain-tritonserver image: the server nvidia-pytriton bundles, laid
# out by model_store.triton.server.prepare_distribution under /opt/tritonserver, run the way
# the platform runs its managed one (see that module): the bundle's own libraries and this
# image's libpython on the library path, the virtualenv's python3 first on PATH (the Python
# backend's stub finds its site-packages, hence numpy, torch and model_store, through it).
set -eu
dist=/opt/tritonserver
libdir="$(/opt/citybrain/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')"
libs="$(echo /opt/citybrain/lib/python3.11/site-packages/nvidia_pytriton.libs)"
export LD_LIBRARY_PATH="${libdir}:${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="/opt/citybrain/bin:${PATH}"
exec "$dist/bin/tritonserver" \
  --backend-directory="$dist/backends" \
  --cache-directory="$dist/caches" \
  "$@"

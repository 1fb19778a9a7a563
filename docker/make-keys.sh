#!/bin/sh
# docker/make-keys.sh: CurveZMQ key pairs for the compose cluster's crypt-proxy pair.
#
# Writes docker/keys/ (git-ignored), the layout compose.yaml mounts read-only:
#   keys/cloud/cloud, cloud_secret     crypt-proxy-cloud's own certificate
#   keys/device/device, device_secret  crypt-proxy-device's own certificate
#   keys/device/cloud                  the cloud proxy's public key (--server-key)
#   keys/allow/device                  device public keys the cloud admits (--allow)
# Rotation: write a new device pair, copy its public file into keys/allow/
# (the cloud proxy re-reads the directory), restart crypt-proxy-device, then
# delete the old public file from keys/allow/. Existing keys are kept.
#
# Uses $SPLITMESH_CLI, else build/bin/splitmesh, else the broker image.
set -eu
cd "$(dirname "$0")"
CLI=${SPLITMESH_CLI:-../build/bin/splitmesh}
mkdir -p keys/cloud keys/device keys/allow
keygen() {  # keygen DIR NAME
    if [ -e "keys/$1/$2_secret" ]; then return 0; fi
    if [ -x "$CLI" ]; then
        "$CLI" keygen --out "keys/$1/$2" >/dev/null
    else
        docker run --rm --user "$(id -u)" -v "$PWD/keys/$1:/out" --entrypoint splitmesh \
            splitmesh/broker:latest keygen --out "/out/$2" >/dev/null
    fi
}
keygen cloud cloud
keygen device device
cp keys/cloud/cloud keys/device/cloud
cp keys/device/device keys/allow/device
# The containers run as uid 10001 and must read their secret key: hand the
# files to that uid when we can (root), else make them readable with a warning.
if [ "$(id -u)" = 0 ]; then
    chown 10001 keys/cloud/cloud_secret keys/device/device_secret
else
    chmod 0644 keys/cloud/cloud_secret keys/device/device_secret
    echo "make-keys: warning: secret keys made world-readable for uid 10001 (run as root to chown instead)" >&2
fi
echo "make-keys: keys in $(pwd)/keys"

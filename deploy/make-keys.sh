#!/bin/sh
# deploy/make-keys.sh: CurveZMQ keys for the Kubernetes overlays' secretGenerators.
#
#   sh deploy/make-keys.sh [DEPLOY_DIR]
# writes (git-ignored, existing keys kept):
#   overlays/datacenter/keys/cloud_secret, overlays/fog/keys/cloud_secret
#                                       each cloud site's own certificate
#   overlays/device/keys/device_secret  the device sites' certificate (device:
#                                       its public half, for the allow lists)
#   overlays/device/keys/cloud          the datacenter proxy's public key
#   overlays/{datacenter,fog}/keys/allow/device   the device public key
# Uses $SPLITMESH_CLI, else build/bin/splitmesh (`splitmesh keygen`).
set -eu
DIR=${1:-$(dirname "$0")}
CLI=${SPLITMESH_CLI:-$(dirname "$0")/../build/bin/splitmesh}
[ -x "$CLI" ] || { echo "make-keys: $CLI not found (build first or set SPLITMESH_CLI)" >&2; exit 1; }
keygen() {  # keygen PATH: writes PATH and PATH_secret unless they exist
    [ -e "$1_secret" ] || "$CLI" keygen --out "$1" >/dev/null
}
mkdir -p "$DIR/overlays/device/keys"
keygen "$DIR/overlays/device/keys/device"
for site in datacenter fog; do
    mkdir -p "$DIR/overlays/$site/keys/allow"
    keygen "$DIR/overlays/$site/keys/cloud"
    cp "$DIR/overlays/device/keys/device" "$DIR/overlays/$site/keys/allow/device"
done
# Devices talk to the datacenter; point overlays/device at fog instead by
# copying overlays/fog/keys/cloud here.
cp "$DIR/overlays/datacenter/keys/cloud" "$DIR/overlays/device/keys/cloud"
echo "make-keys: keys under $DIR/overlays/*/keys"

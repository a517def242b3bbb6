#!/usr/bin/env bash
# Deploys the simulator to Azure Container Apps with the settings from .env:
#   1. the resource group;
#   2. a container registry (registry.bicep);
#   3. the image, built in Azure by `az acr build` (no local Docker needed);
#   4. main.bicep: the container app, its environment, and a storage account whose file share
#      is mounted at /mnt/simulator (recordings go to /mnt/simulator/recording by default);
#   5. when OPENAI_DEPLOYMENT_CONFIG_PATH names a local file, that file is copied to the share
#      and the app restarted to read it.
#
# .env values this script needs besides the simulator's own:
#   AZURE_RESOURCE_GROUP   resource group to create or reuse
#   AZURE_LOCATION         Azure region, such as swedencentral
#   SIMULATOR_API_KEY      the key clients will send (a deployed simulator needs a fixed one)
# and may use: AZURE_SUBSCRIPTION_ID, AZURE_BASE_NAME (prefix of resource names, default aoaisim).
# Every other non-empty value in .env becomes an environment variable of the container.
#
# Usage: deploy/aca/deploy.sh   (or make deploy-aca); ENV_FILE=path picks another file.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ENV_FILE="${ENV_FILE:-$ROOT/.env}"
SHARE_MOUNT=/mnt/simulator
IMAGE_REPOSITORY=aoai-simulator

die() {
    echo "deploy-aca: $*" >&2
    exit 1
}

command -v az >/dev/null 2>&1 ||
    die "the Azure CLI (az) is not installed or not on PATH; install it, run 'az login', then retry"
[[ -f "$ENV_FILE" ]] ||
    die "no $ENV_FILE: copy sample.env to .env and set AZURE_RESOURCE_GROUP, AZURE_LOCATION and SIMULATOR_API_KEY"

# --- .env, read as data (never sourced: a value must not run as a command) ---------------------
# Parallel arrays rather than an associative one, so the bash 3.2 that macOS ships runs this too.
NAMES=()
VALUES=()
set_conf() {
    local i
    for ((i = 0; i < ${#NAMES[@]}; i++)); do
        if [[ "${NAMES[i]}" == "$1" ]]; then
            VALUES[i]="$2"
            return
        fi
    done
    NAMES+=("$1")
    VALUES+=("$2")
}
conf() { # NAME [DEFAULT]: the value in .env, or DEFAULT when it is missing or empty
    local i
    for ((i = 0; i < ${#NAMES[@]}; i++)); do
        if [[ "${NAMES[i]}" == "$1" && -n "${VALUES[i]}" ]]; then
            printf '%s' "${VALUES[i]}"
            return
        fi
    done
    printf '%s' "${2:-}"
}

while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=(.*)$ ]] || continue
    name="${BASH_REMATCH[2]}"
    value="${BASH_REMATCH[3]}"
    value="${value#"${value%%[![:space:]]*}"}"
    if [[ "$value" =~ ^\"(.*)\"[[:space:]]*$ || "$value" =~ ^\'(.*)\'[[:space:]]*$ ]]; then
        value="${BASH_REMATCH[1]}"
    else
        value="${value%%[[:space:]]#*}" # a comment after an unquoted value
        value="${value%"${value##*[![:space:]]}"}"
    fi
    set_conf "$name" "$value"
done <"$ENV_FILE"

missing=""
for name in AZURE_RESOURCE_GROUP AZURE_LOCATION SIMULATOR_API_KEY; do
    [[ -n "$(conf "$name")" ]] || missing+="${missing:+, }$name"
done
MODE="$(conf SIMULATOR_MODE generate)"
if [[ "$MODE" == record ]]; then
    for name in AZURE_OPENAI_ENDPOINT AZURE_OPENAI_KEY; do
        [[ -n "$(conf "$name")" ]] || missing+="${missing:+, }$name (SIMULATOR_MODE=record forwards to Azure OpenAI)"
    done
fi
[[ -z "$missing" ]] || die "$ENV_FILE lacks values for: $missing"

RESOURCE_GROUP="$(conf AZURE_RESOURCE_GROUP)"
LOCATION="$(conf AZURE_LOCATION)"
BASE_NAME="$(conf AZURE_BASE_NAME aoaisim)"
[[ "$BASE_NAME" =~ ^[a-z0-9]{3,11}$ ]] ||
    die "AZURE_BASE_NAME: expected 3 to 11 lower-case letters or digits (it prefixes storage and registry names), got '$BASE_NAME'"
[[ "$MODE" =~ ^(generate|record|replay)$ ]] || die "SIMULATOR_MODE: expected generate, record or replay, got '$MODE'"

# Where files live inside the container: relative paths of a local .env mean nothing there,
# so they are taken under the share.
RECORDING_DIR="$(conf RECORDING_DIR)"
if [[ -z "$RECORDING_DIR" ]]; then
    RECORDING_DIR="$SHARE_MOUNT/recording"
elif [[ "$RECORDING_DIR" != /* ]]; then
    RECORDING_DIR="$SHARE_MOUNT/$RECORDING_DIR"
    echo "deploy-aca: RECORDING_DIR is relative; the container uses $RECORDING_DIR on the file share" >&2
fi
DEPLOYMENTS_FILE="$(conf OPENAI_DEPLOYMENT_CONFIG_PATH)"
DEPLOYMENTS_UPLOAD=""
DEPLOYMENTS_PATH=""
if [[ -n "$DEPLOYMENTS_FILE" ]]; then
    if [[ "$DEPLOYMENTS_FILE" == "$SHARE_MOUNT"/* ]]; then
        DEPLOYMENTS_PATH="$DEPLOYMENTS_FILE" # already on the share
    else
        local_file="$DEPLOYMENTS_FILE"
        [[ "$local_file" == /* ]] || local_file="$ROOT/$local_file"
        [[ -f "$local_file" ]] ||
            die "OPENAI_DEPLOYMENT_CONFIG_PATH: no file $DEPLOYMENTS_FILE here to copy to the share (or give a path under $SHARE_MOUNT)"
        DEPLOYMENTS_UPLOAD="$local_file"
        DEPLOYMENTS_PATH="$SHARE_MOUNT/$(basename "$local_file")"
    fi
fi

# --- the parameters file (it holds the keys: private to this user, removed on exit) ----------
json_string() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    s="${s//$'\t'/\\t}"
    s="${s//$'\n'/\\n}"
    s="${s//$'\r'/\\r}"
    printf '"%s"' "$s"
}

# Values that have their own parameter, or that only steer this script.
OWN=" AZURE_RESOURCE_GROUP AZURE_LOCATION AZURE_SUBSCRIPTION_ID AZURE_BASE_NAME SIMULATOR_API_KEY
 AZURE_OPENAI_KEY SIMULATOR_MODE AZURE_OPENAI_ENDPOINT RECORDING_DIR OPENAI_DEPLOYMENT_CONFIG_PATH "
extra=""
for ((i = 0; i < ${#NAMES[@]}; i++)); do
    name="${NAMES[i]}"
    [[ "$OWN" != *[[:space:]]"$name"[[:space:]]* && -n "${VALUES[i]}" ]] || continue
    extra+="${extra:+, }$(json_string "$name"): $(json_string "${VALUES[i]}")"
done

umask 077
PARAMS="$(mktemp "${TMPDIR:-/tmp}/aoai-simulator-params.XXXXXX")"
trap 'rm -f "$PARAMS"' EXIT

if [[ -n "$(conf AZURE_SUBSCRIPTION_ID)" ]]; then
    az account set --subscription "$(conf AZURE_SUBSCRIPTION_ID)"
fi
az account show --output none 2>/dev/null || die "the Azure CLI is not logged in: run 'az login' first"

echo "==> resource group $RESOURCE_GROUP in $LOCATION"
az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none

echo "==> container registry"
REGISTRY="$(az deployment group create --resource-group "$RESOURCE_GROUP" --name aoai-simulator-registry \
    --template-file "$HERE/registry.bicep" --parameters baseName="$BASE_NAME" location="$LOCATION" \
    --query properties.outputs.name.value --output tsv)"
[[ -n "$REGISTRY" ]] || die "the registry deployment returned no registry name"

TAG="$(date -u +%Y%m%d-%H%M%S)"
IMAGE="$IMAGE_REPOSITORY:$TAG"
echo "==> building $IMAGE in $REGISTRY"
az acr build --registry "$REGISTRY" --image "$IMAGE" --file "$ROOT/Dockerfile" "$ROOT"

cat >"$PARAMS" <<EOF
{
  "\$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {
    "location": {"value": $(json_string "$LOCATION")},
    "baseName": {"value": $(json_string "$BASE_NAME")},
    "containerRegistryName": {"value": $(json_string "$REGISTRY")},
    "imageName": {"value": $(json_string "$IMAGE")},
    "simulatorApiKey": {"value": $(json_string "$(conf SIMULATOR_API_KEY)")},
    "azureOpenAIKey": {"value": $(json_string "$(conf AZURE_OPENAI_KEY)")},
    "simulatorMode": {"value": $(json_string "$MODE")},
    "azureOpenAIEndpoint": {"value": $(json_string "$(conf AZURE_OPENAI_ENDPOINT)")},
    "recordingDir": {"value": $(json_string "$RECORDING_DIR")},
    "deploymentConfigPath": {"value": $(json_string "$DEPLOYMENTS_PATH")},
    "extraEnv": {"value": {$extra}}
  }
}
EOF

echo "==> container app"
OUTPUTS="$(az deployment group create --resource-group "$RESOURCE_GROUP" --name aoai-simulator \
    --template-file "$HERE/main.bicep" --parameters "@$PARAMS" \
    --query "[properties.outputs.url.value, properties.outputs.appName.value, properties.outputs.storageAccountName.value, properties.outputs.shareName.value]" \
    --output tsv | tr '\n' '\t')"
IFS=$'\t' read -r URL APP STORAGE SHARE <<<"$OUTPUTS"
[[ -n "$URL" && -n "$APP" ]] || die "the app deployment returned no URL"

if [[ -n "$DEPLOYMENTS_UPLOAD" ]]; then
    echo "==> copying $(basename "$DEPLOYMENTS_UPLOAD") to the file share; restarting the app to read it"
    STORAGE_KEY="$(az storage account keys list --resource-group "$RESOURCE_GROUP" --account-name "$STORAGE" \
        --query "[0].value" --output tsv)"
    # The key goes by environment, not on a command line other users can list.
    AZURE_STORAGE_KEY="$STORAGE_KEY" az storage file upload --account-name "$STORAGE" --share-name "$SHARE" \
        --source "$DEPLOYMENTS_UPLOAD" --path "$(basename "$DEPLOYMENTS_UPLOAD")" --output none
    REVISION="$(az containerapp show --resource-group "$RESOURCE_GROUP" --name "$APP" \
        --query properties.latestRevisionName --output tsv)"
    az containerapp revision restart --resource-group "$RESOURCE_GROUP" --name "$APP" --revision "$REVISION" --output none
fi

echo
echo "The simulator is at $URL (app $APP, image $REGISTRY/$IMAGE)."
echo "Files on the share $SHARE of $STORAGE appear in the container under $SHARE_MOUNT."
echo "Try: curl $URL/++/health"

#!/usr/bin/env bash
# Seed each target's corpus from the test fixtures. A fuzz input is `[n][n seed bytes][input]`
# (see src/fuzzing/mod.rs): a leading 0 byte means "no seed, the rest is the input".
set -euo pipefail
cd "$(dirname "$0")"
seed() { # target, files...
    local target=$1; shift
    mkdir -p "corpus/$target"
    for f in "$@"; do
        { printf '\0'; cat "$f"; } >"corpus/$target/$(basename "$f")"
    done
}
fx=../tests/fixtures
seed sse $fx/*/*.sse
seed usage_stream $fx/anthropic/reverse_upstream_stream.sse $fx/*/expected_client_stream.sse $fx/*/tool_expected_client_stream.sse
seed usage_json $fx/anthropic/reverse_upstream_response.json $fx/*/expected_client_response.json
seed body $fx/*/client_request.json $fx/anthropic/reverse_client_request.json $fx/gemini/embeddings_client_request.json
seed translate_anthropic $fx/anthropic/client_request.json $fx/anthropic/tool_client_request.json $fx/anthropic/upstream_response.json $fx/anthropic/tool_upstream_response.json
seed translate_anthropic_stream $fx/anthropic/upstream_stream.sse $fx/anthropic/tool_upstream_stream.sse $fx/anthropic/thinking_upstream_stream.sse
seed translate_anthropic_reverse $fx/anthropic/reverse_client_request.json $fx/anthropic/reverse_upstream_response.json
seed translate_anthropic_reverse_stream $fx/anthropic/reverse_upstream_stream.sse
seed translate_gemini $fx/gemini/client_request.json $fx/gemini/tool_client_request.json $fx/gemini/upstream_response.json $fx/gemini/tool_upstream_response.json
seed translate_gemini_stream $fx/gemini/upstream_stream.sse $fx/gemini/tool_upstream_stream.sse
seed translate_gemini_embed $fx/gemini/embeddings_client_request.json $fx/gemini/embeddings_upstream_response.json
seed config ../conf/tollgate.yaml
mkdir -p corpus/quota_api && printf '\0consumer=alice&quota=10&value=-3' >corpus/quota_api/form
mkdir -p corpus/multipart && printf '\0--fzB0undary\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--fzB0undary\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n--fzB0undary--\r\n' >corpus/multipart/form
seed cache_json $fx/*/client_request.json $fx/*/expected_client_response.json

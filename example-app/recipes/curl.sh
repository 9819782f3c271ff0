# curl: -N prints each event as it arrives; the second-to-last carries credits_used, then data: [DONE]
curl -sN "$GATEWAY_URL/chat/completions" \
  -H "Authorization: Bearer $GATEWAY_KEY" -H "Content-Type: application/json" \
  -d '{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"Write a haiku about TCP"}]}'

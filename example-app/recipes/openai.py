# The official openai SDK (Python): stream a chat completion, then read the gateway's credits_used.
import os
from openai import OpenAI

client = OpenAI(base_url=os.environ["GATEWAY_URL"], api_key=os.environ["GATEWAY_KEY"])
stream = client.chat.completions.create(
    model="mock-1",
    messages=[{"role": "user", "content": "Write a haiku about TCP"}],
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
    # fields the SDK does not know are kept in model_extra
    credits = (chunk.model_extra or {}).get("credits_used")
    if credits is not None:
        print(f"\ncredits_used: {credits}")

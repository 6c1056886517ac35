"""schemathesis hooks for the fuzz run (tests/fuzz/run): keep every media download on loopback.

Generated media URLs name arbitrary hosts; the server would resolve and fetch them. In every case meant
to be valid, an http(s) media URL is pointed at a file the server under test serves itself
(`FUZZ_MEDIA_URL`), so the media pipeline runs end to end (download, sniffing, type check) and nothing
leaves the machine. Cases meant to be invalid are left alone: the server refuses them before any download.
"""

import os

import schemathesis

MEDIA_KEYS = ("image", "audio", "video", "document")


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = getattr(case, "meta", None)
    if meta is not None and meta.generation.mode.is_negative:
        return
    body = case.body
    if not (isinstance(body, dict) and isinstance(body.get("content"), dict)):
        return
    for key in MEDIA_KEYS:
        media = body["content"].get(key)
        if isinstance(media, dict) and isinstance(media.get("url"), str):
            media["url"] = os.environ["FUZZ_MEDIA_URL"]
    case.body = body

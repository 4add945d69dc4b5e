"""The pluggable inference layer: LLM and speech-to-text providers, pricing, the prompt cache.

litellm fetches its price map from the internet when it is imported, with retries that
stall a process for seconds where there is no internet, unless told to use the map it
ships. Every process that imports litellm does so through this package, so the default is
set here, once, before any module of it imports litellm; the environment still wins.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

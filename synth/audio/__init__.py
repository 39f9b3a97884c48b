"""Audio as the driver: features, the audio-to-landmark network, its data, training and streamed inference.

Sits between ``synth.train`` and ``synth.avatar``: the avatar layer turns its mouth-space motion
into landmarks (``synth.avatar.animate``); it never imports the CLI, provenance or detect.
"""

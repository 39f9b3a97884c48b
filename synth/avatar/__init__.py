"""Avatars: the loaded model, enrollment, fine-tuning, motion, animation, the avatar file and bundled assets."""

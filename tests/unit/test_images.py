"""What an image must carry for the roles that run on it, read from the roles' own defaults."""

from __future__ import annotations

import re

import pytest

from pacslab.listeners import role_default
from pacslab.topology import IMAGES_DIR


@pytest.mark.parametrize("image", sorted(role_default("log_rotation", "log_rotation_image_files")))
def test_each_image_with_logs_to_rotate_installs_logrotate(image: str) -> None:
    """roles/log_rotation runs logrotate on each image its log_rotation_image_files names: an image
    without it would let those logs grow (supervisor's program fails, "logrotate: not found")."""
    lines = (IMAGES_DIR / image / "Dockerfile").read_text().splitlines()
    instructions = "\n".join(line for line in lines if not line.lstrip().startswith("#"))  # a comment installs nothing
    assert re.search(r"apt-get install[^&]*\blogrotate\b", instructions), f"images/{image}/Dockerfile installs no logrotate"

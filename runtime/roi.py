"""A region of interest: where in an image to look, in that image's pixels."""

from __future__ import annotations

from typing import NamedTuple


class Roi(NamedTuple):
    x: int
    y: int
    w: int
    h: int

    @classmethod
    def of(cls, value: object) -> Roi:
        """A Roi from four integers (a tuple, a list or a Roi); ValueError otherwise."""
        try:
            x, y, w, h = (int(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"roi must be four integers (x, y, width, height), got {value!r}") from None
        return cls._checked(x, y, w, h, value)

    @classmethod
    def _checked(cls, x: int, y: int, w: int, h: int, shown: object) -> Roi:
        if w < 1 or h < 1 or x < 0 or y < 0:
            raise ValueError(f"roi {shown!r}: needs x, y >= 0 and width, height >= 1")
        return cls(x, y, w, h)

    @classmethod
    def parse(cls, text: str) -> Roi:
        """``"x,y,w,h"`` (a command-line flag or a query parameter)."""
        parts = text.split(",")
        if len(parts) != 4 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
            raise ValueError(f"roi must be x,y,w,h in pixels (four non-negative integers), not {text!r}")
        return cls._checked(*(int(p) for p in parts), text)

    def check_inside(self, width: int, height: int) -> Roi:
        if self.x + self.w > width or self.y + self.h > height:
            raise ValueError(f"roi {tuple(self)} does not fit inside the {width}x{height} image")
        return self

    def clipped(self, width: int, height: int) -> Roi:
        """The part inside a ``width`` x ``height`` image (frames may be smaller than asked)."""
        x, y = min(self.x, width - 1), min(self.y, height - 1)
        return Roi(x, y, max(1, min(self.w, width - x)), max(1, min(self.h, height - y)))

    def scaled(self, scale: float) -> Roi:
        """The same region in an image resized by ``scale`` (at least one pixel)."""
        if scale == 1:
            return self
        return Roi(round(self.x * scale), round(self.y * scale), max(1, round(self.w * scale)),
                   max(1, round(self.h * scale)))

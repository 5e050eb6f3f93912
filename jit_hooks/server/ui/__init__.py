"""The approver web page under /ui: server-rendered, no JavaScript (docs/ui.md)."""

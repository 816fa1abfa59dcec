"""systemd target (jinja2 unit templates and their renderer): planned in a later issue."""

"""Operating a deployment after `up`: what exists (inventory), whether the server answers (status), the
login (login), password rotation (rotate) and removal (teardown). No display here: the CLI draws."""

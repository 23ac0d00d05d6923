"""Operating a deployment after `up`: what exists (inventory), whether the server answers (server_check), the
login (login), password rotation (rotate) and removal (teardown). No display here: the CLI draws."""

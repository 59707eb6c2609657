from nasctl.cli import app

app(prog_name="nasctl")

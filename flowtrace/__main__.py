from flowtrace.cli import app

app(prog_name="flowtrace")

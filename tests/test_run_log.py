"""The progress line's rate and ETA, on a fake clock, and the metrics file of a resumed run."""
import math

from gan_jax import run_log


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_rate_and_eta_leave_out_the_compilation_of_the_first_step(tmp_path, monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(run_log.time, "time", clock)
  log = run_log.RunLog(str(tmp_path), start_step=0, num_steps=101)
  clock.now += 30.0  # the first step compiles
  log.restart_clock(1)
  assert math.isnan(log.progress(1, {}))  # nothing timed yet
  clock.now += 10.0
  assert log.progress(51, {"d_loss": 1.0}) == 5.0  # 50 steps in 10 s, not 51 in 40 s
  log.close()


def test_a_resume_drops_the_rows_after_its_checkpoint(tmp_path):
  log = run_log.RunLog(str(tmp_path), 0, 10)
  for step in (2, 4, 6):
    log.write(step, {"d_loss": float(step)})
  log.close()
  resumed = run_log.RunLog(str(tmp_path), start_step=4, num_steps=10)
  resumed.write(6, {"d_loss": 60.0})
  resumed.close()
  assert [(r["step"], r["d_loss"]) for r in run_log.read_metrics(str(tmp_path))] == \
      [(2, 2.0), (4, 4.0), (6, 60.0)]

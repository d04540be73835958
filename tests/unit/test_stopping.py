from imgclf.train.stopping import EarlyStopping


def test_stops_after_patience_without_improvement():
    s = EarlyStopping(patience=2, min_delta=0.01)
    flags = [s.update(v, e) for e, v in enumerate([0.5, 0.6, 0.605, 0.59], start=1)]
    assert flags == [True, True, False, False] and s.should_stop and s.best_epoch == 2


def test_min_mode_and_never_stop_with_zero_patience():
    s = EarlyStopping(patience=0, mode="min")
    for e, v in enumerate([1.0, 0.9, 0.95, 0.97, 0.99], start=1):
        s.update(v, e)
    assert not s.should_stop and s.best == 0.9 and s.bad_epochs == 3


def test_state_round_trip():
    a = EarlyStopping(patience=3)
    a.update(0.4, 1)
    a.update(0.3, 2)
    b = EarlyStopping(patience=3)
    b.load_state_dict(a.state_dict())
    assert b == a

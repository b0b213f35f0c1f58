"""segmentation_node parameters (validation, messages) and its per-camera health rules.

No rclpy needed: params.py and diagnostics.py are plain Python.
"""
import functools

import pytest

from seg_perception import model_info
from seg_perception.ros import params, worker
from seg_perception.ros.diagnostics import ERROR, OK, WARN, CameraStats, health, key_values
from seg_perception.ros.node_config import QosConfig


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / 'model.onnx'
    path.write_bytes(b'onnx')
    return str(path)


def test_defaults_give_one_camera_with_sensor_data_qos(model_file):
    config = params.build_config({'model': model_file})
    (camera,) = config.cameras
    assert (camera.name, camera.topic, camera.transport) == ('camera', 'camera/image_raw', 'raw')
    assert config.input_qos == QosConfig('best_effort', 1)
    kwargs = config.pipeline_kwargs()
    assert kwargs['model_path'] == model_file and kwargs['backend'] == 'auto'
    assert kwargs['drivable_classes'] is None and kwargs['engine_cache_dir'] is None


def test_backend_torch_means_the_runtime_pytorch_backend(model_file):
    config = params.build_config({'model': model_file, 'backend': 'torch', 'threads': 2,
                                  'engine_cache_dir': '/var/cache/engines'})
    kwargs = config.pipeline_kwargs()
    assert kwargs['backend'] == 'pytorch' and kwargs['threads'] == 2
    assert kwargs['engine_cache_dir'] == '/var/cache/engines'


def test_nested_camera_parameters(model_file):
    config = params.build_config({
        'model': model_file, 'cameras': ['front', 'back'],
        'cameras.front.topic': '/cam/front/image', 'cameras.back.transport': 'compressed',
        'cameras.back.camera_info': '/cam/back/camera_info', 'max_frame_age_ms': 50,
        'drivable_classes': ['road', 3]})
    front, back = config.cameras
    assert front.topic == '/cam/front/image' and front.transport == 'raw'
    assert back.topic == 'back/image_raw/compressed' and back.transport == 'compressed'
    assert back.camera_info_topic == '/cam/back/camera_info'
    assert config.max_frame_age_ms == 50.0 and config.drivable_classes == ('road', 3)


@pytest.mark.parametrize('values,match', [
    ({'backend': 'tensorflow'}, "'backend': 'tensorflow' is not one of auto, tensorrt"),
    ({'precision': 'fp8'}, "'precision': 'fp8' is not one of"),
    ({'output_resolution': 'full'}, "'output_resolution'"),
    ({'cameras.camera.transport': 'theora'}, "'cameras.camera.transport': 'theora'"),
    ({'qos.depth': 0}, "'qos.depth': 0 is below the minimum 1"),
    ({'qos.reliability': 'sometimes'}, "'qos.reliability'"),
    ({'max_frame_age_ms': -1.0}, "'max_frame_age_ms': -1.0 is below"),
    ({'max_batch': -1}, "'max_batch': -1 is below"),
    ({'publish_color': 'yes'}, "'publish_color': expected a bool"),
    ({'cameras': []}, 'at least one camera'),
    ({'cameras': ['front', 'front']}, 'front listed twice'),
    ({'cameras': ['front/left']}, "'front/left' is not a valid camera name"),
    ({'cameras': ['a', 'b'], 'cameras.a.topic': '/x', 'cameras.b.topic': '/x'},
     'cameras a, b all subscribe to /x'),
    ({'cameras': ['a', 'b'], 'cameras.a.topic': '/x', 'cameras.b.topic': 'x'},
     r'^cameras a, b all subscribe to /x \(given as /x, x\)$'),
    ({'cameras': ['a', 'b', 'c'], 'cameras.c.topic': '/a/image_raw'},
     r'^cameras a, c all subscribe to /a/image_raw \(given as /a/image_raw, a/image_raw\)$'),
    ({'drivable_classes': [1.5]}, "'drivable_classes': expected class names or ids"),
    ({'model': '/nonexistent/model.onnx'}, "'model': file not found: /nonexistent/model.onnx"),
])
def test_invalid_parameters_name_the_parameter(values, match, model_file):
    with pytest.raises(params.ParameterError, match=match):
        params.build_config({'model': model_file, **values})


def test_topics_are_compared_as_resolved_in_the_node_namespace(model_file):
    two = {'model': model_file, 'cameras': ['a', 'b'], 'cameras.a.topic': '/x',
           'cameras.b.topic': 'x'}
    in_car = functools.partial(params.expand_topic_name, namespace='/car')
    assert [c.topic for c in params.build_config(two, resolve_topic=in_car).cameras] == \
        ['/x', 'x']                               # /x and /car/x: two topics
    with pytest.raises(params.ParameterError, match=r'cameras a, b all subscribe to /car/x'):
        params.build_config({**two, 'cameras.a.topic': '/car/x'}, resolve_topic=in_car)


@pytest.mark.parametrize('topic,expanded', [
    ('/x', '/x'), ('x', '/car/x'), ('a/b', '/car/a/b'), ('~/x', '/car/segmentation_node/x'),
    ('~', '/car/segmentation_node')])
def test_expand_topic_name(topic, expanded):
    assert params.expand_topic_name(topic, '/car') == expanded
    assert params.expand_topic_name(topic, '/') == expanded.replace('/car', '', 1)


def test_empty_model_uses_the_shipped_default_or_says_there_is_none(monkeypatch, model_file):
    monkeypatch.setattr(model_info, 'default_model_path', lambda: model_file)
    assert params.build_config({'model': ''}).model_path == model_file
    monkeypatch.setattr(model_info, 'default_model_path', lambda: None)
    with pytest.raises(params.ParameterError, match='ships no default model'):
        params.build_config({'model': ''})


def test_every_parameter_is_described_with_its_allowed_values():
    for spec in params.NODE_PARAMS + params.camera_params('front'):
        assert spec.description
        if spec.choices:
            assert spec.default in spec.choices
            assert spec.constraints() == 'one of: ' + ', '.join(spec.choices)


def test_unknown_parameters_are_reported():
    declared = [s.name for s in params.NODE_PARAMS]
    given = ['backend', 'backnd', 'use_sim_time', 'cameras.front.topik']
    assert params.unknown_parameters(given, declared) == ['backnd', 'cameras.front.topik']


def test_class_map_parameters():
    values = params.class_map_parameters(['road', 'sidewalk', 'car'],
                                         [[128, 64, 128], [244, 35, 232], [0, 0, 142]], (0, 1))
    assert values == {'class_map.names': ['road', 'sidewalk', 'car'],
                      'class_map.colors': ['#804080', '#f423e8', '#00008e'],
                      'class_map.drivable_ids': [0, 1]}


# -- diagnostics ---------------------------------------------------------------------
def test_camera_stats_rates_drops_and_percentiles():
    now = [100.0]
    stats = CameraStats(window_s=5.0, clock=lambda: now[0])
    for step in range(50):                       # 10 Hz in, 5 Hz out, for 5 s
        now[0] = 100.0 + step * 0.1
        stats.record_input()
        if step % 2:
            stats.record_output(latency_ms=float(step))
        else:
            stats.record_drop(worker.SUPERSEDED)
    now[0] = 105.0
    snap = stats.snapshot()
    assert snap['input_rate_hz'] == pytest.approx(10.0, abs=0.3)
    assert snap['output_rate_hz'] == pytest.approx(5.0, abs=0.3)
    assert snap['dropped'] == {'superseded': 25}
    assert snap['latency_p50_ms'] == pytest.approx(25.0, abs=1.0)
    assert 45 <= snap['latency_p95_ms'] <= 49
    now[0] = 120.0                               # nothing for 15 s: rates fall to zero
    assert stats.snapshot()['output_rate_hz'] == 0.0


def test_latency_warning_clears_one_window_after_a_burst_of_late_frames():
    now = [0.0]
    stats = CameraStats(window_s=5.0, clock=lambda: now[0])
    for step in range(20):                       # 2 s of frames 500 ms late
        now[0] = step * 0.1
        stats.record_output(latency_ms=500.0)
    for step in range(20, 120):                  # then 10 s on time
        now[0] = step * 0.1
        stats.record_output(latency_ms=20.0)
        level, message = health(stats.snapshot(), 5.0, 200.0)
        if now[0] <= 6.0:                        # >= 10 late frames in the 5 s window
            assert level != OK and 'latency' in message, now[0]
        elif now[0] >= 7.0:                      # none left
            assert level == OK and 'latency' not in message, now[0]
    assert stats.snapshot()['latency_p95_ms'] == pytest.approx(20.0)


def test_stamps_from_the_future_warn_instead_of_passing_as_low_latency():
    now = [0.0]
    stats = CameraStats(window_s=5.0, clock=lambda: now[0])
    for step in range(50):
        now[0] = step * 0.1
        stats.record_output(latency_ms=-2300.0 + step)     # the camera clock runs ahead
    snap = stats.snapshot()
    assert snap['latency_p50_ms'] is None and snap['stamps_ahead_ms'] == pytest.approx(2300.0)
    level, message = health(snap, 5.0, 200.0)
    assert (level, message) == (WARN, 'header stamps 2.3 s ahead of the node clock')
    assert dict(key_values(snap))['stamps_ahead_ms'] == '2300.0'
    for step in range(50, 110):                  # clocks back in step: cleared after the window
        now[0] = step * 0.1
        stats.record_output(latency_ms=30.0)
    assert health(stats.snapshot(), 5.0, 200.0)[0] == OK


def snapshot(out_rate=10.0, in_rate=10.0, p50=20.0, p95=30.0, ahead=None):
    return {'input_rate_hz': in_rate, 'output_rate_hz': out_rate, 'latency_p50_ms': p50,
            'latency_p95_ms': p95, 'received': 5, 'published': 5, 'dropped': {'too_old': 2},
            'node_overhead_p50_ms': 1.5, 'stamps_ahead_ms': ahead, 'lost_upstream': 0,
            'lost_upstream_rate_hz': 0.0, 'lost_upstream_pct': None}


@pytest.mark.parametrize('snap,level,text', [
    (snapshot(), OK, '10.0 Hz'),
    (snapshot(out_rate=3.0), WARN, 'output rate 3.0 Hz below minimum 5 Hz'),
    (snapshot(out_rate=0.0), ERROR, 'nothing published (input 10.0 Hz)'),
    (snapshot(out_rate=0.0, in_rate=0.0, p50=None, p95=None), ERROR, 'no images received'),
    (snapshot(p95=150.0), WARN, 'p95 latency 150 ms over budget 100 ms'),
    (snapshot(p50=120.0, p95=150.0), ERROR, 'median latency 120 ms over budget'),
    (snapshot(out_rate=3.0, p95=150.0), WARN, 'below minimum 5 Hz; p95 latency'),
    (snapshot(ahead=40.0), WARN, 'header stamps 40 ms ahead of the node clock'),
])
def test_health_levels(snap, level, text):
    got_level, message = health(snap, min_rate_hz=5.0, latency_budget_ms=100.0)
    assert got_level == level and text in message


def test_no_rate_check_when_minimum_is_zero():
    assert health(snapshot(out_rate=0.0, in_rate=0.0), 0.0, 100.0)[0] == OK


def test_key_values_list_drops_per_reason_and_backend():
    pairs = dict(key_values(snapshot(), {'backend': 'onnxruntime', 'precision': 'fp32'}))
    assert pairs['dropped'] == '2' and pairs['dropped.too_old'] == '2'
    assert pairs['backend'] == 'onnxruntime' and pairs['latency_p95_ms'] == '30.0'

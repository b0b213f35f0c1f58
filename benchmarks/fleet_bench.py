"""Throughput of bag-eval over many small bags: serial vs parallel workers vs Ray.

Writes ``benchmarks/FLEET.md``. The bags are the test bags (one camera, painted 48x64
frames, the ColourNet test model), so the work per frame is small and the numbers
show the fleet's overhead per bag: the wall time per bag minus the frames' own
processing time (the sum of the per-frame ``end_to_end`` latencies, all bags).

    PYTHONPATH=$PWD:$PWD/test python benchmarks/fleet_bench.py [--bags 8] [--frames 5]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bags', type=int, default=8)
    parser.add_argument('--frames', type=int, default=5)
    parser.add_argument('--output', default=os.path.join(HERE, 'FLEET.md'))
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'test'))
    import bag_helpers as bh
    from seg_perception.replay.fleet import run_fleet
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = os.path.join(scratch, 'bags')
        os.makedirs(folder)
        for index in range(args.bags):
            bh.labelled_bag(os.path.join(folder, f'bag{index:02d}'), args.frames)
        model = bh.model_path()
        for mode, kwargs in (('serial (1 worker)', {'workers': 1}),
                             ('parallel (2 workers)', {'workers': 2}), ('Ray (2 CPUs)', None)):
            if kwargs is None:
                try:
                    import ray
                except ImportError:
                    rows.append((mode, None))
                    continue
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                kwargs = {'ray': True}
            started = time.monotonic()
            summary = run_fleet([folder], [model], os.path.join(scratch, mode.split()[0]),
                                progress=False, **kwargs)
            wall = time.monotonic() - started
            if kwargs.get('ray'):
                ray.shutdown()
            pooled = summary['per_model'][0]
            work_s = pooled['latency_ms']['end_to_end']['mean'] * pooled['frames'] / 1000.0
            rows.append((mode, (wall, pooled['frames'], work_s, summary['bags_ok'])))
    write(args, rows, load)


def write(args, rows, load) -> None:
    from seg_perception.runtime.cpu_features import cpu_description
    lines = ['# bag-eval over many bags: serial, parallel, Ray', '',
             f'- date: {datetime.date.today().isoformat()}',
             f'- machine: {platform.node()}, {os.cpu_count()} CPUs, {cpu_description()},'
             f' Python {platform.python_version()}; shared with other jobs (load average '
             f'{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the start)',
             f'- command: `PYTHONPATH=$PWD:$PWD/test python benchmarks/fleet_bench.py --bags '
             f'{args.bags} --frames {args.frames}`',
             f'- work: {args.bags} bags of {args.frames} frames (48x64, one camera, ColourNet '
             'test model), ground truth on; wall time includes starting the workers (and the '
             'Ray tasks\' workers), not ray.init', '',
             '| mode | wall (s) | bags/s | frames/s | overhead per bag (s) |',
             '|---|---|---|---|---|']
    for mode, numbers in rows:
        if numbers is None:
            lines.append(f'| {mode} | Ray not installed | | | |')
            continue
        wall, frames, work_s, ok = numbers
        lines.append(f'| {mode} | {wall:.1f} | {ok / wall:.2f} | {frames / wall:.1f} | '
                     f'{(wall - work_s) / ok:.2f} |')
    lines += ['', 'Overhead per bag = (wall time - the frames\' own end-to-end time) / bags: '
              'opening the bag, the output bag and its report, starting workers. With bags '
              'this small it is most of the time; on real bags the frames dominate.', '']
    with open(args.output, 'w', encoding='utf-8') as stream:
        stream.write('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()

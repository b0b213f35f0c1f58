"""The text of the bag-eval report, once as Markdown and once as self-contained HTML.

The content is laid out once, as a list of blocks (heading, paragraph, table,
picture), and rendered twice: Markdown links the pictures by relative path,
HTML embeds them as base64 PNG so the one file can be mailed or attached.
"""
from __future__ import annotations

import base64
import html
import os
from typing import Dict, List, Sequence, Tuple

from seg_perception.evaluation.tables import markdown_table

STAGE_NOTES = {
    'decode': 'deserialize + image decode', 'convert': 'to RGB at the fed size',
    'infer': 'backend call', 'postprocess': 'upsample + drivable + overlay',
    'pipeline': 'SegmentationPipeline.process', 'node': 'decode + pipeline: the node\'s work',
    'write': 'output messages to the bag (not a node cost)',
    'end_to_end': 'decode + pipeline + write',
}


def _ms(value) -> str:
    return 'n/a' if value is None else f'{value:.1f}'


def _pct(value) -> str:
    return 'n/a' if value is None else f'{100.0 * value:.2f}'


def _num(value, digits=2) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def blocks(result: Dict, pictures: Dict[str, str],
           overlays: Sequence[Tuple[str, str]]) -> List[tuple]:
    """The report as ('h1'|'h2'|'p'|'warn', text), ('table', header, rows) and
    ('img', caption, path) blocks."""
    out: List[tuple] = [('h1', f'Bag evaluation: {os.path.basename(result["bag"])}')]
    if result.get('status') != 'complete':
        out.append(('warn', f'PARTIAL: the run stopped early after {result["frames"]} frames: '
                            f'{result.get("error")}'))
    inference = result.get('inference') or {}
    out.append(('table', ('', ''), [
        ('bag', f'{result["bag"]} ({result.get("bag_format")})'),
        ('model', f'{result.get("model")} ({result.get("architecture")})'),
        ('backend', f'{inference.get("name")} {inference.get("precision") or ""} on '
                    f'{inference.get("device") or "?"}'),
        ('output bag', str(result.get('output_bag')) + (
            '' if result.get('output_bag_closed', True) else
            ' (not closed: no metadata.yaml, read it as a recording cut short)')),
        ('frames', str(result['frames'])),
        ('recording', f'{_num(result.get("recording_s"))} s'),
        ('processing', f'{_num(result.get("processing_s"))} s (wall time of the run '
                       f'{_num(result.get("seconds"))} s)'),
    ]))
    cameras = result.get('cameras') or {}
    out.append(('h2', 'Cameras'))
    out.append(('table', ('camera', 'topic', 'type', 'frames', 'skipped', 'recorded fps',
                          'processing fps', 'outputs'),
                [(name, c['topic'], c['message_type'].rsplit('/', 1)[-1], c['frames'],
                  c['skipped'], _num(c['recorded_fps'], 1), _num(c['processing_fps'], 1),
                  ', '.join(c['output_topics']))
                 for name, c in cameras.items()]))
    realtime = result.get('realtime') or {}
    out.append(('h2', 'Real time'))
    out.append(('p', realtime.get('verdict', 'n/a')))
    out.append(('p', 'Work per frame = decode + pipeline, one frame at a time on one worker, '
                     'the first frame per camera left out of the mean (warm-up). The node '
                     'batches cameras, so this is its single-frame worst case.'))
    out.append(('h2', 'Latency per stage (ms)'))
    header = ('stage', 'median', 'p95', 'max', 'what')
    groups = [('all cameras', result.get('latency_ms') or {})]
    if len(cameras) > 1:
        groups += [(name, c['latency_ms']) for name, c in cameras.items()]
    for title, latency in groups:
        if len(groups) > 1:
            out.append(('p', title))
        out.append(('table', header, [(stage, _ms(v['median']), _ms(v['p95']), _ms(v['max']),
                                       STAGE_NOTES.get(stage, ''))
                                      for stage, v in latency.items()]))
    if 'latency' in pictures:
        out.append(('img', 'Latency (decode + pipeline) over recording time, '
                           '(dashed: frame period)',
                    pictures['latency']))
    truth = result.get('ground_truth')
    if truth:
        out += _truth_blocks(result, truth, cameras, pictures)
    skipped = [(name, reason) for name, c in cameras.items() for reason in c['skip_reasons']]
    if skipped:
        out.append(('h2', 'Skipped frames'))
        out.append(('table', ('camera', 'reason'), skipped))
    unreadable = result.get('unreadable_messages') or {}
    if unreadable:
        out.append(('h2', 'Unreadable messages'))
        out.append(('p', 'Messages that do not deserialize were skipped; the run went on.'))
        out.append(('table', ('topic', 'messages skipped'), sorted(unreadable.items())))
    ground = result.get('ground')
    if ground:
        out += _ground_blocks(ground)
    out += _extra_blocks(result.get('extra_outputs') or {})
    left_out = [f'{name} {note}' for name, c in cameras.items()
                for note in c.get('overlays_left_out', ())]
    if overlays or left_out:
        out.append(('h2', 'Overlays'))
    if overlays:
        text = 'Left: class colours over the image. Middle: drivable area in green.'
        if ground and ground.get('grids_written'):
            text += (' Right: the fused bird\'s-eye grid after that frame (x up, y left in '
                     f'{ground["grid_frame"]}; green drivable, red not drivable, grey unknown; '
                     'the arrow is the vehicle), when that camera could be placed.')
        else:
            text = text.replace('Middle', 'Right')
        out.append(('p', text))
        out += [('img', caption, path) for caption, path in overlays]
    out += [('p', note) for note in left_out]
    return out


def _extra_blocks(extra: Dict) -> List[tuple]:
    masks, probabilities = extra.get('masks') or {}, extra.get('probabilities') or {}
    if not masks and not probabilities:
        return []
    out: List[tuple] = [('h2', 'Masks and probabilities')]
    if masks:
        out.append(('p', 'The model\'s extra masks (mono8, 255 = on), not scored.'))
        out.append(('table', ('mask', 'camera', 'topic', 'messages', 'pixels on (%)'),
                    [(name, camera, c['topic'], c['messages'], _pct(c['on_fraction']))
                     for name, cameras in masks.items() for camera, c in cameras.items()]))
    if probabilities:
        out.append(('p', 'Class probabilities asked for (mono8, p × 255).'))
        out.append(('table', ('class', 'camera', 'topic', 'messages'),
                    [(name, camera, c['topic'], c['messages'])
                     for name, cameras in probabilities.items()
                     for camera, c in cameras.items()]))
    return out


def _ground_blocks(ground: Dict) -> List[tuple]:
    out: List[tuple] = [('h2', 'Drivable grid')]
    if not ground.get('grids_written'):
        out.append(('p', f'No drivable grid: {ground.get("no_grid_reason")}.'))
        return out
    out.append(('p', f'{ground["grids_written"]} grids on {ground["grid_topic"]} '
                     f'(nav_msgs/OccupancyGrid, frame {ground["grid_frame"]}, '
                     f'{ground["grid_size_m"]:g} m at {ground["grid_resolution_m"]:g} m), '
                     f'{ground["ground_points_written"]} ground point clouds; tf from '
                     f'{", ".join(ground["tf_topics"])}.'))
    out.append(('table', ('camera', 'frames in the grid', 'note'),
                [(name, c['frames_in_grid'], c['note'] or '')
                 for name, c in ground['cameras'].items()]))
    return out


def not_scored_text(truth) -> str:
    """'12.3% of the labelled pixels (label values ...)', or '' when every pixel was scored."""
    left_out = (truth or {}).get('not_scored') or {}
    if not left_out.get('pixels'):
        return ''
    return f'{100 * left_out["fraction"]:.1f}% of the labelled pixels ({left_out["rule"]})'


def _truth_blocks(result, truth, cameras, pictures) -> List[tuple]:
    out: List[tuple] = [('h2', 'Accuracy against ground truth (%)')]
    out.append(('p', f'{truth["kind"]} labels from {truth["source"]}: '
                     f'{truth["frames_scored"]} frames scored, {truth["labels_matched"]} labels '
                     f'matched, {truth["labels_unmatched"]} labels without a frame.'))
    left_out = not_scored_text(truth)
    if left_out:
        out.append(('warn', f'Every score below leaves out {left_out}; what the model '
                            'labels there is not scored.'))
    out.append(('table', ('metric', 'value'), [
        ('mIoU', _pct(result.get('miou'))), ('drivable-area IoU', _pct(result.get('drivable_iou'))),
        ('pixel accuracy', _pct(result.get('pixel_accuracy'))),
        ('mean class accuracy', _pct(result.get('mean_accuracy')))]))
    per_class = result.get('per_class_iou') or {}
    out.append(('table', ('class', 'IoU'), [(n, _pct(v)) for n, v in per_class.items()]))
    labelled = [(n, c['metrics']) for n, c in cameras.items() if c.get('metrics')]
    if len(labelled) > 1:
        out.append(('table', ('camera', 'frames', 'mIoU', 'drivable IoU'),
                    [(n, m['num_images'], _pct(m['miou']), _pct(m['drivable_iou']))
                     for n, m in labelled]))
    if 'confusion' in pictures:
        out.append(('img', 'Confusion matrix (rows: ground truth)', pictures['confusion']))
    return out


def markdown_report(result: Dict, pictures: Dict[str, str],
                    overlays: Sequence[Tuple[str, str]], output_dir: str) -> str:
    """report.md: pictures linked relative to ``output_dir``."""
    return render_markdown(blocks(result, pictures, overlays), output_dir)


def render_markdown(page: Sequence[tuple], output_dir: str) -> str:
    """Markdown of ``page``'s blocks (see blocks), pictures linked relative to ``output_dir``."""
    lines: List[str] = []
    for block in page:
        kind = block[0]
        if kind == 'h1':
            lines += [f'# {block[1]}', '']
        elif kind == 'h2':
            lines += [f'## {block[1]}', '']
        elif kind == 'warn':
            lines += [f'> **{block[1]}**', '']
        elif kind == 'p':
            lines += [block[1], '']
        elif kind == 'table':
            lines.append(markdown_table(block[1], block[2], align='l' * len(block[1])))
        elif kind == 'img':
            relative = os.path.relpath(block[2], output_dir).replace(os.sep, '/')
            lines += [f'![{block[1]}]({relative})', '', f'*{block[1]}*', '']
    return '\n'.join(lines).rstrip() + '\n'


_STYLE = ('body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}'
          'table{border-collapse:collapse;margin:.5em 0 1em}'
          'td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}'
          'th{background:#f0f0f0}.warn{background:#fde2e1;border:1px solid #d33;padding:.6em}'
          'figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:90%}')


def _embedded(path: str) -> str:
    with open(path, 'rb') as stream:
        return 'data:image/png;base64,' + base64.b64encode(stream.read()).decode('ascii')


def html_report(result: Dict, pictures: Dict[str, str],
                overlays: Sequence[Tuple[str, str]]) -> str:
    """report.html: one file, pictures embedded as base64 PNG."""
    return render_html(f'Bag evaluation: {os.path.basename(result["bag"])}',
                       blocks(result, pictures, overlays))


def render_html(title: str, page: Sequence[tuple]) -> str:
    """One HTML file of ``page``'s blocks (see blocks), pictures embedded as base64 PNG."""
    title = html.escape(title)
    parts = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
             f'<title>{title}</title><style>{_STYLE}</style></head><body>']
    for block in page:
        kind = block[0]
        if kind in ('h1', 'h2'):
            parts.append(f'<{kind}>{html.escape(block[1])}</{kind}>')
        elif kind == 'warn':
            parts.append(f'<p class="warn">{html.escape(block[1])}</p>')
        elif kind == 'p':
            parts.append(f'<p>{html.escape(block[1])}</p>')
        elif kind == 'table':
            head = ''.join(f'<th>{html.escape(str(h))}</th>' for h in block[1])
            rows = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>' for c in row)
                           + '</tr>' for row in block[2])
            parts.append(f'<table>{"<tr>" + head + "</tr>" if any(block[1]) else ""}'
                         f'{rows}</table>')
        elif kind == 'img':
            parts.append(f'<figure><img alt="{html.escape(block[1])}" '
                         f'src="{_embedded(block[2])}"><figcaption>{html.escape(block[1])}'
                         '</figcaption></figure>')
    parts.append('</body></html>')
    return '\n'.join(parts) + '\n'

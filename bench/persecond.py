#!/usr/bin/env python3
"""bench/persecond.py METRICS_LOG HISTOGRAM...: per-second deltas of Prometheus histograms in a
bench/latency.sh metrics.log (or .gz): each second's count, p50 and p99 (a bucket's upper bound).
A histogram with labels is named with them sorted, e.g.
  bench/persecond.py runs/100/10/sluice-1/metrics.log.gz sluice_raft_save_sync_duration_seconds \
      'sluice_request_duration_seconds{api=Produce}'
"""
import gzip, sys, re
def parse(path):
    snaps=[]; cur=None
    for line in (gzip.open(path, 'rt') if path.endswith('.gz') else open(path)):
        if line.startswith('# T'):
            cur={'t':float(line.split()[2]),'h':{}}; snaps.append(cur); continue
        m=re.match(r'(\w+)_bucket\{(.*)\} (\S+)',line)
        if m and cur is not None:
            name,labels,v=m.groups()
            lab=dict(re.findall(r'(\w+)="([^"]*)"',labels)); le=lab.pop('le')
            key=name+('{'+','.join(f'{k}={v}' for k,v in sorted(lab.items()))+'}' if lab else '')
            cur['h'].setdefault(key,[]).append((float('inf') if le=='+Inf' else float(le),float(v)))
    return snaps
def q(b,frac):
    tot=b[-1][1]
    if tot<=0: return 0
    for le,c in b:
        if c>=frac*tot: return le
    return float('inf')
snaps=parse(sys.argv[1]); keys=sys.argv[2:]
print('sec '+' '.join(f'{k[:28]:>28s}' for k in keys))
for i in range(1,len(snaps)):
    row=[]
    for k in keys:
        a=snaps[i-1]['h'].get(k); b=snaps[i]['h'].get(k)
        if not a or not b: row.append(f'{"-":>28s}'); continue
        d=[(le,cb-ca) for (le,ca),(_,cb) in zip(a,b)]
        row.append(f'{int(d[-1][1]):7d} p50 {q(d,.5)*1e3:6.2f} p99 {q(d,.99)*1e3:6.1f}')
    print(f'{i:3d} '+' '.join(row))

#!/usr/bin/env python3
"""ptxloops.py FILE.ptx|FILE.sass [--blocks] [--skip BLOCK,BLOCK] [--marker mma.sync]   (.sass: nvdisasm -c output)
Splits the (single) entry of an ILGPU PTX file into basic blocks, finds natural loops (back edges via dominators),
and prints, for each outermost loop containing the marker, instruction counts by kind: over the whole loop and per
block (so rarely taken blocks can be subtracted by hand)."""
import re, sys, collections

def classify(ins):
    op = ins.split()[0]
    if op.startswith('@'):
        op = ins.split()[1]
    base = op.split('.')[0]
    if op.startswith('mma.'): return 'mma'
    if op.startswith('cvt.rn.bf16x2'): return 'cvt.bf16x2'
    if base == 'cvt': return 'cvt(other)'
    for sp in ('global', 'shared', 'local', 'param'):
        if op.startswith('ld.' + sp): return 'ld.' + sp
        if op.startswith('st.' + sp): return 'st.' + sp
    if base in ('bar', 'membar', 'fence'): return 'bar/fence'
    if base == 'bra': return 'bra'
    if base in ('setp', 'selp') or op.endswith('.pred') or base == 'not' and '%p' in ins: return 'setp/selp/pred'
    if base == 'mov':
        if '__local_depot' in ins: return 'mov(depot addr)'
        return 'mov.64' if re.search(r'\.(b|u|s)64', op) else 'mov.32'
    if base in ('add','sub','mul','mad','shl','shr','and','or','xor','neg','div','rem','min','max','abs'):
        if op.endswith('.f32') or op.endswith('.f64'): return 'float arith'
        if 'wide' in op or re.search(r'\.(b|u|s)64$', op): return 'int64 arith'
        return 'int32 arith'
    return 'other:' + op

def classify_sass(ins):
    parts = ins.split()
    op = parts[1] if parts[0].startswith('@') else parts[0]
    base = op.split('.')[0]
    table = {'HMMA': 'mma', 'LDG': 'ld.global', 'LDS': 'ld.shared', 'STS': 'st.shared', 'STG': 'st.global',
             'LDL': 'ld.local', 'STL': 'st.local', 'BAR': 'bar/fence', 'MEMBAR': 'bar/fence', 'F2FP': 'cvt.bf16x2',
             'F2F': 'cvt(other)', 'I2F': 'cvt(other)', 'BRA': 'bra', 'BSSY': 'bssy/bsync', 'BSYNC': 'bssy/bsync',
             'ISETP': 'setp/selp/pred', 'FSETP': 'setp/selp/pred', 'SEL': 'setp/selp/pred', 'FSEL': 'setp/selp/pred',
             'PLOP3': 'setp/selp/pred', 'P2R': 'setp/selp/pred', 'R2P': 'setp/selp/pred',
             'MOV': 'mov', 'CS2R': 'mov', 'S2R': 'special reg', 'S2UR': 'special reg', 'ULDC': 'uniform/const',
             'LDC': 'uniform/const', 'FADD': 'float arith', 'FMUL': 'float arith', 'FFMA': 'float arith', 'NOP': 'nop'}
    if op.startswith('IMAD.MOV') or op == 'IMAD.U32' and 'RZ, RZ' in ins: return 'mov'
    if op.startswith('IMAD.WIDE') or op.startswith('LEA.HI.X') or op.startswith('IADD3.X') or '.X' in op.split('.')[1:]:
        return 'int64 arith'
    if base.startswith('U') and base not in table: return 'uniform/const'
    if base in table: return table[base]
    if base in ('IADD3', 'IMAD', 'LEA', 'SHF', 'LOP3', 'IABS', 'IMNMX', 'PRMT', 'SGXT', 'POPC', 'FLO', 'BMSK'): return 'int32 arith'
    return 'other:' + op

def parse_sass(path):
    blocks, cur = [], None
    name = '?'
    for raw in open(path):
        m = re.match(r'^\s*\.text\.(\w+):', raw)
        if m: name = m.group(1)
        lm = re.match(r'^(\.L_x_\d+|\w+):\s*$', raw.strip())
        if lm and not raw.strip().startswith('.text'):
            cur = {'label': lm.group(1), 'ins': []}; blocks.append(cur); continue
        im = re.match(r'^\s*/\*[0-9a-f]+\*/\s+(.*?)\s*;', raw)
        if not im: continue
        ins = im.group(1).replace('`(', '').replace(')', '')
        if cur is None: cur = {'label': '<entry>', 'ins': []}; blocks.append(cur)
        cur['ins'].append(ins)
        parts = ins.split(); op = parts[1] if parts[0].startswith('@') else parts[0]
        if op in ('BRA', 'EXIT', 'RET', 'BRX') or op.startswith('BRA.') or op.startswith('RET.'):
            cur = {'label': None, 'ins': []}; blocks.append(cur)
    return name, *successors(blocks, lambda op: op.startswith('BRA'), ('EXIT', 'RET'))

def parse(path):
    text = open(path).read()
    m = re.search(r'\.entry\s+(\w+)\s*\((.*?)\)\s*\{(.*)\}', text, re.S)
    name, body = m.group(1), m.group(3)
    blocks, cur = [], None
    for raw in body.split('\n'):
        line = raw.split('//')[0].strip()
        if not line or line.startswith('.reg') or line.startswith('.local') or line.startswith('.shared'): continue
        lm = re.match(r'^(\w+):$', line)
        if lm:
            cur = {'label': lm.group(1), 'ins': [], 'line': None}; blocks.append(cur); continue
        if line in ('{', '}'): continue
        if cur is None:
            cur = {'label': '<entry>', 'ins': []}; blocks.append(cur)
        for ins in [s.strip() for s in line.split(';') if s.strip()]:
            cur['ins'].append(ins)
            op = ins.split()[1] if ins.startswith('@') else ins.split()[0]
            if op.startswith('bra') or op == 'ret' or op == 'exit':
                cur = {'label': None, 'ins': []}; blocks.append(cur)
    return name, *successors(blocks, lambda op: op.startswith('bra'), ('ret', 'exit'))

def successors(blocks, is_branch, exits):
    """Drops empty unlabelled blocks; each block's successors: its branch target, and the next block unless it ends in an
    unconditional branch or exit."""
    blocks = [b for b in blocks if b['ins'] or b['label']]
    index = {b['label']: i for i, b in enumerate(blocks) if b['label']}
    succ = []
    for i, b in enumerate(blocks):
        s = []
        last = b['ins'][-1] if b['ins'] else ''
        parts = last.split()
        pred = bool(parts) and parts[0].startswith('@')
        op = parts[1] if pred else (parts[0] if parts else '')
        if is_branch(op):
            s.append(index[parts[-1]])
            if pred and i + 1 < len(blocks): s.append(i + 1)
        elif op in exits and not pred: pass
        elif i + 1 < len(blocks): s.append(i + 1)
        succ.append(s)
    return blocks, succ

def dominators(n, succ):
    pred = [[] for _ in range(n)]
    for i, ss in enumerate(succ):
        for s in ss: pred[s].append(i)
    dom = [set(range(n)) for _ in range(n)]; dom[0] = {0}
    changed = True
    while changed:
        changed = False
        for i in range(1, n):
            new = set(range(n))
            for p in pred[i]: new &= dom[p]
            if not pred[i]: new = set()
            new = new | {i}
            if new != dom[i]: dom[i] = new; changed = True
    return dom, pred

def main():
    path = sys.argv[1]; show_blocks = '--blocks' in sys.argv
    skip = set(int(x) for x in sys.argv[sys.argv.index('--skip') + 1].split(',')) if '--skip' in sys.argv else set()
    marker = sys.argv[sys.argv.index('--marker') + 1] if '--marker' in sys.argv else 'mma.sync'
    sass = path.endswith('.sass')
    global classify
    if sass: classify = classify_sass; marker = 'HMMA' if marker == 'mma.sync' else marker
    name, blocks, succ = (parse_sass if sass else parse)(path)
    n = len(blocks); dom, pred = dominators(n, succ)
    loops = collections.defaultdict(set)
    for i in range(n):
        for s in succ[i]:
            if s in dom[i]:  # back edge i -> s
                body = {s, i}; stack = [i]
                while stack:
                    x = stack.pop()
                    if x == s: continue
                    for p in pred[x]:
                        if p not in body: body.add(p); stack.append(p)
                loops[s] |= body
    # outermost loops containing the marker
    hdrs = [h for h in loops if any(marker in ins for b in loops[h] for ins in blocks[b]['ins'])]
    outer = [h for h in hdrs if not any(h != h2 and loops[h] < loops[h2] for h2 in hdrs)]
    total = collections.Counter(classify(i) for b in blocks for i in b['ins'])
    print(f'{path}: entry {name}, {n} blocks, {sum(total.values())} instructions')
    for h in sorted(outer):
        body = sorted(loops[h])
        c = collections.Counter(classify(i) for b in body for i in blocks[b]['ins'])
        print(f'\nloop header {blocks[h]["label"]}: {len(body)} blocks, {sum(c.values())} instructions (static, all blocks)')
        for k, v in sorted(c.items(), key=lambda kv: -kv[1]): print(f'  {k:18} {v}')
        inner = [h2 for h2 in loops if h2 != h and loops[h2] < loops[h]]
        for h2 in inner: print(f'  inner loop {blocks[h2]["label"]}: {len(loops[h2])} blocks')
        if skip:
            hot = [b for b in body if b not in skip]
            ch = collections.Counter(classify(i) for b in hot for i in blocks[b]['ins'])
            print(f'  hot path (loop minus blocks {sorted(skip)}): {sum(ch.values())} instructions')
            for k, v in sorted(ch.items(), key=lambda kv: -kv[1]): print(f'    {k:18} {v}')
        if show_blocks:
            for b in body:
                cb = collections.Counter(classify(i) for i in blocks[b]['ins'])
                lab = blocks[b]['label'] or f'<fall {b}>'
                print(f'  [{b}] {lab:14} n={len(blocks[b]["ins"]):3} succ={[blocks[s]["label"] or s for s in succ[b]]} ' +
                      ', '.join(f'{k}={v}' for k, v in sorted(cb.items(), key=lambda kv: -kv[1])))

main()

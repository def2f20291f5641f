import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cmdlineValue, parseNbdDevice, parseNbdroot, splitCmdline } from '../../src/registry/cmdline.js';

test('nbdroot= forms, as nbd-client\'s initramfs script reads them', () => {
  assert.deepEqual(parseNbdroot('server/jammy'), { server: 'server', exportName: 'jammy' });
  assert.deepEqual(parseNbdroot('192.168.1.10:10809/jammy'), { server: '192.168.1.10', port: 10809, exportName: 'jammy' });
  assert.deepEqual(parseNbdroot('192.168.1.10:/jammy'), { server: '192.168.1.10', exportName: '/jammy' });
  assert.deepEqual(parseNbdroot('[fd00::1]:10810/root'), { server: 'fd00::1', port: 10810, exportName: 'root' });
  assert.deepEqual(parseNbdroot('[fd00::1]:/root'), { server: 'fd00::1', exportName: '/root' });
  assert.deepEqual(parseNbdroot('10.0.0.1,jammy,nbd0'), { server: '10.0.0.1', exportName: 'jammy', device: 'nbd0' });
  assert.deepEqual(parseNbdroot('10.0.0.1,2000'), { server: '10.0.0.1', port: 2000 });
  assert.deepEqual(parseNbdroot('/jammy'), { server: '', exportName: '/jammy' });
  assert.match((parseNbdroot('server') as { error: string }).error, /no export name/);
  assert.match((parseNbdroot('server:99x/a') as { error: string }).error, /not a port/);
  assert.match((parseNbdroot('dhcp') as { error: string }).error, /from DHCP/);
});

test('command lines split like the kernel, last value wins', () => {
  const args = splitCmdline('console=serial0,115200 root=LABEL=x quiet foo="a b" root=/dev/nbd0p2\n');
  assert.deepEqual(args, ['console=serial0,115200', 'root=LABEL=x', 'quiet', 'foo="a b"', 'root=/dev/nbd0p2']);
  assert.equal(cmdlineValue(args, 'root'), '/dev/nbd0p2');
  assert.deepEqual(parseNbdDevice('/dev/nbd0p2'), { device: 'nbd0', partition: 2 });
  assert.deepEqual(parseNbdDevice('/dev/nbd1'), { device: 'nbd1' });
  assert.equal(parseNbdDevice('LABEL=writable'), null);
});

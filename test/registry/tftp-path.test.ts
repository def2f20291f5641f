/** The TFTP path parser the registry looks requests up with: pure, no identity learned. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTftpPath } from '../../src/registry/registry.js';

test('parseTftpPath: Pi serial prefix, PXELINUX MAC lookup, anything else', () => {
  assert.deepEqual(parseTftpPath('89025D75/start4.elf'), { kind: 'pi', serial: '89025d75', file: 'start4.elf', path: '89025D75/start4.elf' });
  assert.deepEqual(parseTftpPath('12345678/overlays/x.dtbo'), { kind: 'pi', serial: '12345678', file: 'overlays/x.dtbo', path: '12345678/overlays/x.dtbo' });
  assert.deepEqual(parseTftpPath('pxelinux.cfg/01-52-54-00-AA-BB-01'), { kind: 'pxelinux-mac', mac: '52:54:00:aa:bb:01', path: 'pxelinux.cfg/01-52-54-00-AA-BB-01' });
  for (const p of ['pxelinux.0', 'pxelinux.cfg/default', 'pxelinux.cfg/C612', '1234567/x', '123456789/x', 'zz345678/x']) {
    assert.deepEqual(parseTftpPath(p), { kind: 'path', path: p }, p);
  }
});

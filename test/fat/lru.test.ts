/** The bounded LRU behind the FAT caches: bounded by count and by weight, least recently used goes first. */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { BoundedLru } from '../../src/fat/lru.js';

it('evicts the least recently used entry past the count or the weight bound', () => {
  const lru = new BoundedLru<string, number[]>(3, 10, (v) => v.length);
  lru.set('a', [1, 2]);
  lru.set('b', [1, 2]);
  lru.set('c', [1, 2]);
  assert.deepEqual(lru.get('a'), [1, 2]); // a is now the most recent
  lru.set('d', [1]);
  assert.equal(lru.get('b'), undefined, 'b was the least recent');
  assert.equal(lru.size, 3);
  lru.set('e', [1, 2, 3, 4, 5, 6]); // weight 2+2+1+6 = 11 > 10: c goes, then the total fits
  assert.equal(lru.get('c'), undefined);
  assert.ok(lru.weight <= 10);
  lru.set('huge', new Array(11).fill(0));
  assert.equal(lru.get('huge'), undefined, 'heavier than the bound: not kept');
  lru.set('a', [9]);
  assert.deepEqual(lru.get('a'), [9]);
  lru.clear();
  assert.equal(lru.size, 0);
  assert.equal(lru.weight, 0);
});

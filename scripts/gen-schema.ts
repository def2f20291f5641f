// Regenerates config/netbootd.schema.json from src/config/schema.ts: node --import tsx scripts/gen-schema.ts
import { writeFileSync } from 'node:fs';
import { configJsonSchemaText } from '../src/config/json-schema.js';

writeFileSync(new URL('../config/netbootd.schema.json', import.meta.url), configJsonSchemaText());
console.log('wrote config/netbootd.schema.json');

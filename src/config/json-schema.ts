/** The published JSON Schema of netbootd.yaml (config/netbootd.schema.json), derived from the validator's schema. */
import { configSchema } from './schema.js';
import { toJsonSchema } from './schema-dsl.js';

export function configJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://netbootd.invalid/netbootd.schema.json',
    title: 'netbootd configuration',
    ...toJsonSchema(configSchema),
  };
}

export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}

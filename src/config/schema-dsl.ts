/**
 * A small schema language for the configuration: one definition gives the validator (with YAML
 * positions, defaults and typed values), the TypeScript type (`Infer`) and the published JSON Schema.
 * The YAML is parsed with the failsafe schema (every scalar is text), and each field converts its text
 * itself, so `00123456` stays a serial and never goes through a number.
 */

export interface Issue {
  /** Dotted path of the key, e.g. `images.jammy.mode`. */
  path: string;
  message: string;
}

interface Base {
  description?: string;
}

export interface StringSchema extends Base {
  kind: 'string';
  default?: string;
  enum?: readonly string[];
  /** Returns an error message (a sentence saying what would be right) or null. */
  check?: (value: string) => string | null;
  /** JSON Schema `pattern` / `format` hints for editors. */
  pattern?: string;
  format?: string;
  examples?: string[];
}
export interface IntegerSchema extends Base {
  kind: 'integer';
  default?: number;
  minimum: number;
  maximum: number;
}
export interface BooleanSchema extends Base {
  kind: 'boolean';
  default?: boolean;
}
export interface ArraySchema<I extends Schema = Schema> extends Base {
  kind: 'array';
  items: I;
  default?: [];
}
export interface ObjectSchema<P extends Record<string, Schema> = Record<string, Schema>> extends Base {
  kind: 'object';
  properties: P;
  required?: readonly (keyof P & string)[];
  /** Missing object → validated as `{}` (so nested defaults apply). */
  defaultEmpty?: boolean;
}
export interface MapSchema<V extends Schema = Schema> extends Base {
  kind: 'map';
  /** Key check: returns an error, or a normalized key with an optional warning. */
  key: {
    description: string;
    pattern?: string;
    normalize: (key: string) => { key: string; warning?: string } | { error: string };
  };
  values: V;
}
/** A string shorthand or the object form, e.g. `bootFile: pxelinux.0` or `bootFile: { bios: …, uefi: … }`. */
export interface StringOrObjectSchema<O extends ObjectSchema = ObjectSchema> extends Base {
  kind: 'stringOrObject';
  string: StringSchema;
  object: O;
}

export type Schema =
  | StringSchema
  | IntegerSchema
  | BooleanSchema
  | ArraySchema
  | ObjectSchema
  | MapSchema
  | StringOrObjectSchema;

type RequiredKeys<S extends ObjectSchema> = S['required'] extends readonly (infer K)[] ? K & string : never;
type HasDefault<S> = S extends { default: unknown } ? true : S extends { defaultEmpty: true } ? true : S extends { kind: 'map' } ? true : false;
type ObjectOut<S extends ObjectSchema> = {
  [K in keyof S['properties'] as K extends RequiredKeys<S> ? K : HasDefault<S['properties'][K]> extends true ? K : never]: Infer<S['properties'][K]>;
} & {
  [K in keyof S['properties'] as K extends RequiredKeys<S> ? never : HasDefault<S['properties'][K]> extends true ? never : K]?: Infer<S['properties'][K]>;
};

/** The TypeScript type of a validated value. */
export type Infer<S> = S extends StringSchema
  ? S['enum'] extends readonly (infer E)[] ? E : string
  : S extends IntegerSchema
    ? number
    : S extends BooleanSchema
      ? boolean
      : S extends ArraySchema<infer I>
        ? Infer<I>[]
        : S extends ObjectSchema
          ? { [K in keyof ObjectOut<S>]: ObjectOut<S>[K] }
          : S extends MapSchema<infer V>
            ? Record<string, Infer<V>>
            : S extends StringOrObjectSchema<infer O>
              ? string | Infer<O>
              : never;

/** Builders that keep literal types for inference. */
export const s = {
  string: <T extends Omit<StringSchema, 'kind'>>(o: T = {} as T) => ({ kind: 'string' as const, ...o }),
  integer: <T extends Omit<IntegerSchema, 'kind'>>(o: T) => ({ kind: 'integer' as const, ...o }),
  boolean: <T extends Omit<BooleanSchema, 'kind'>>(o: T = {} as T) => ({ kind: 'boolean' as const, ...o }),
  array: <I extends Schema, T extends Omit<ArraySchema<I>, 'kind' | 'items'>>(items: I, o: T = {} as T) => ({ kind: 'array' as const, items, ...o }),
  object: <P extends Record<string, Schema>, const T extends Omit<ObjectSchema<P>, 'kind' | 'properties'>>(properties: P, o: T = {} as T) => ({
    kind: 'object' as const,
    properties,
    ...o,
  }),
  map: <V extends Schema>(key: MapSchema['key'], values: V, o: Base = {}) => ({ kind: 'map' as const, key, values, ...o }),
  stringOrObject: <O extends ObjectSchema>(string: StringSchema, object: O, o: Base = {}) => ({
    kind: 'stringOrObject' as const,
    string,
    object,
    ...o,
  }),
};

/** JSON Schema (draft 2020-12) for editors. */
export function toJsonSchema(schema: Schema): Record<string, unknown> {
  const base = (x: Schema): Record<string, unknown> => (x.description ? { description: x.description } : {});
  switch (schema.kind) {
    case 'string':
      return {
        ...base(schema),
        type: 'string',
        ...(schema.enum ? { enum: [...schema.enum] } : {}),
        ...(schema.pattern ? { pattern: schema.pattern } : {}),
        ...(schema.format ? { format: schema.format } : {}),
        ...(schema.default !== undefined ? { default: schema.default } : {}),
        ...(schema.examples ? { examples: schema.examples } : {}),
      };
    case 'integer':
      // Quoted numbers are accepted too (every scalar is read as text), but editors should suggest numbers.
      return {
        ...base(schema),
        type: 'integer',
        minimum: schema.minimum,
        maximum: schema.maximum,
        ...(schema.default !== undefined ? { default: schema.default } : {}),
      };
    case 'boolean':
      return { ...base(schema), type: 'boolean', ...(schema.default !== undefined ? { default: schema.default } : {}) };
    case 'array':
      return { ...base(schema), type: 'array', items: toJsonSchema(schema.items) };
    case 'object':
      return {
        ...base(schema),
        type: 'object',
        additionalProperties: false,
        properties: Object.fromEntries(Object.entries(schema.properties).map(([k, v]) => [k, toJsonSchema(v)])),
        ...(schema.required && schema.required.length ? { required: [...schema.required] } : {}),
      };
    case 'map':
      return {
        ...base(schema),
        type: 'object',
        propertyNames: { description: schema.key.description, ...(schema.key.pattern ? { pattern: schema.key.pattern } : {}) },
        additionalProperties: toJsonSchema(schema.values),
      };
    case 'stringOrObject':
      return { ...base(schema), oneOf: [toJsonSchema(schema.string), toJsonSchema(schema.object)] };
  }
}

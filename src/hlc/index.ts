export * from './hlc.js';
export * from './clock.js';
